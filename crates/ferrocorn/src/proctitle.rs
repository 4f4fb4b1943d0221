//! The process title that `ps`, `top` and `pgrep -f` show ("ferrocorn: worker [app:app]").
//!
//! Linux has no call for it: the title is whatever sits in the memory that held the process's
//! original argument strings, which the kernel reads back for `/proc/<pid>/cmdline`. The title is
//! written over that memory (Python keeps its own copies of `argv`, so nothing reads it after
//! start-up), truncated to its size, and the thread name (`comm`, 15 bytes) is set as well.
//! Done here rather than through the `setproctitle` package, whose import pulls in Python's
//! `logging` and cost every process 1.4 MiB.

use std::ffi::CString;

/// Sets this process's title; silently does nothing where the kernel gives no argument area.
pub fn set(title: &str) {
    let name: Vec<u8> = title.bytes().filter(|b| *b != 0).take(15).collect();
    if let Ok(name) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((start, end)) = arg_area(&stat) else {
        return;
    };
    let size = end - start;
    let title = title.as_bytes();
    let n = title.len().min(size - 1);
    // SAFETY: [start, end) is this process's own argument strings, on its initial stack:
    // mapped, writable and read by nothing but the kernel once the interpreter has copied them.
    // Every byte after the title is zeroed, the last one included, so the kernel ends the
    // command line there.
    unsafe {
        let area = start as *mut u8;
        std::ptr::copy_nonoverlapping(title.as_ptr(), area, n);
        std::ptr::write_bytes(area.add(n), 0, size - n);
    }
}

/// The argument area's bounds from `/proc/self/stat` (fields 48 and 49, `arg_start` and
/// `arg_end`), counted after the parenthesised command name, which may itself hold spaces.
fn arg_area(stat: &str) -> Option<(usize, usize)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start != 0 && end > start + 1).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, arg_start: u64, arg_end: u64) -> String {
        // Fields 3..=47 as placeholders, then arg_start, arg_end, env_start, env_end, exit_code.
        let filler: Vec<String> = (3..=47).map(|i| i.to_string()).collect();
        format!(
            "1234 ({comm}) {} {arg_start} {arg_end} 900 950 0\n",
            filler.join(" ")
        )
    }

    #[test]
    fn reads_the_argument_area() {
        assert_eq!(arg_area(&stat_line("python3", 100, 180)), Some((100, 180)));
    }

    #[test]
    fn a_command_name_with_spaces_and_parens_does_not_shift_the_fields() {
        let line = stat_line("ferrocorn: (x) y", 4096, 5000);
        assert_eq!(arg_area(&line), Some((4096, 5000)));
    }

    #[test]
    fn refuses_an_empty_or_truncated_line() {
        assert_eq!(arg_area(&stat_line("p", 0, 0)), None);
        assert_eq!(arg_area("1234 (p) S 1 2 3"), None);
        assert_eq!(arg_area("no parenthesis"), None);
    }

    #[test]
    fn the_live_process_has_one() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
        assert!(arg_area(&stat).is_some());
    }
}
