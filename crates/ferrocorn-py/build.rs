//! Records what `ferrocorn --version` says about the build (src/build_info.rs): the target
//! triple and the compiler. What tools/pgo_build.py sets (`FERROCORN_BUILD_PGO`,
//! `FERROCORN_BUILD_WHEEL_TAG`) is read with `option_env!`, which cargo tracks by itself.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=FERROCORN_BUILD_TARGET={target}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=FERROCORN_BUILD_RUSTC={version}");
}
