//! `--reload`: noticing that a source file of the app changed, with inotify (through `notify`),
//! not by polling.
//!
//! Directories are watched rather than files: editors often save by writing a new file and
//! renaming it over the old one, which a watch on the old file's inode would miss.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("cannot start the file watcher: {0}")]
    Start(#[source] notify::Error),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Keeps watching while alive.
pub type WatchHandle = RecommendedWatcher;

/// Events closer together than this are one change (a save is often several writes).
const SETTLE: Duration = Duration::from_millis(200);

/// Watches `files`; calls `on_change` with a changed file, once per burst of changes, from a
/// thread of its own. Watching stops when the returned watcher is dropped.
pub fn watch(
    files: impl IntoIterator<Item = PathBuf>,
    on_change: impl Fn(&Path) + Send + 'static,
) -> Result<RecommendedWatcher, ReloadError> {
    let files: HashSet<PathBuf> = files
        .into_iter()
        .map(|f| std::fs::canonicalize(&f).unwrap_or(f))
        .collect();
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let watched = files.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        for path in event.paths {
            if watched.contains(&path) {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(ReloadError::Start)?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    std::thread::Builder::new()
        .name("ferrocorn-reload".into())
        .spawn(move || {
            while let Ok(path) = rx.recv() {
                // Let the burst settle, then report once.
                while rx.recv_timeout(SETTLE).is_ok() {}
                on_change(&path);
            }
        })
        .map_err(|e| ReloadError::Start(notify::Error::io(e)))?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    #[test]
    fn reports_a_file_replaced_by_rename_once() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.py");
        let other = dir.join("other.txt");
        std::fs::write(&file, "x = 1\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::<PathBuf>::new()));
        let sink = Arc::clone(&seen);
        let _w = watch([file.clone()], move |p| {
            sink.lock().unwrap().push(p.to_owned())
        })
        .unwrap();
        std::fs::write(&other, "not watched").unwrap();
        let tmp = dir.join("app.py.tmp");
        std::fs::write(&tmp, "x = 2\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, vec![std::fs::canonicalize(&file).unwrap()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
