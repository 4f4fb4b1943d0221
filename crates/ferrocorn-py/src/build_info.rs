//! How this build was made, for `ferrocorn --version`, so a bug report shows it.
//! tools/pgo_build.py (which `make wheels`, `make install` and `pip install` run) sets
//! `FERROCORN_BUILD_PGO` and `FERROCORN_BUILD_WHEEL_TAG` for the compiler; build.rs adds the
//! target triple and the compiler's version.

use pyo3::prelude::*;

/// The TLS stack compiled in (crates/ferrocorn/Cargo.toml: rustls on ring, docs/design.md).
const TLS: &str = "rustls 0.23, ring provider";

/// How the compiler was driven: profile-guided or not.
fn optimisation() -> &'static str {
    match option_env!("FERROCORN_BUILD_PGO") {
        Some("1") => "profile-guided (PGO, trained on bench/apps)",
        Some("instrumented") => "instrumented for PGO training (not a release build)",
        _ => "one-pass (no PGO)",
    }
}

/// True when the running interpreter is a free-threaded build (3.13t, 3.14t).
fn free_threaded(py: Python<'_>) -> bool {
    py.import("sysconfig")
        .and_then(|m| m.call_method1("get_config_var", ("Py_GIL_DISABLED",)))
        .and_then(|v| v.is_truthy())
        .unwrap_or(false)
}

/// The lines under `ferrocorn VERSION` that `--version` prints.
pub(crate) fn describe(py: Python<'_>) -> String {
    let wheel = option_env!("FERROCORN_BUILD_WHEEL_TAG")
        .unwrap_or("none recorded (not built by tools/pgo_build.py)");
    let python = py.version_info();
    format!(
        "build: {}\nTLS: {TLS}\nwheel: {wheel}\ntarget: {}\nrustc: {}\npython: {}.{}.{}{}",
        optimisation(),
        env!("FERROCORN_BUILD_TARGET"),
        env!("FERROCORN_BUILD_RUSTC"),
        python.major,
        python.minor,
        python.patch,
        if free_threaded(py) {
            " (free-threaded)"
        } else {
            ""
        },
    )
}

/// What `--version` prints after the program's name.
pub(crate) fn long_version(py: Python<'_>) -> String {
    format!("{}\n{}", env!("CARGO_PKG_VERSION"), describe(py))
}
