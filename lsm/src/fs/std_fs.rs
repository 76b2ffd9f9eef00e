//! Real files under one root directory, through `std::fs`.

use super::{DetachedFsync, FileSystem, FsError, FsErrorKind};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file holding the space reserve ([`FileSystem::reserve_space`]). Not an engine file: the
/// engine never lists, recovers or removes it as one.
pub const SPACE_RESERVE_FILE: &str = "space.reserve";

/// A [`FileSystem`] over the files of one directory. Open handles are kept (one per file) so that
/// appends and reads do not reopen files.
#[derive(Debug)]
pub struct StdFs {
    root: PathBuf,
    open: BTreeMap<String, File>,
    /// Second handles, without `O_APPEND`, for [`FileSystem::write_at`]: on Linux a positioned
    /// write through an append-mode descriptor lands at the end of the file, whatever the offset.
    overwrite: BTreeMap<String, File>,
}

fn io_error(file: &str, error: &std::io::Error) -> FsError {
    let kind = match error.kind() {
        ErrorKind::NotFound => FsErrorKind::NotFound,
        ErrorKind::AlreadyExists => FsErrorKind::AlreadyExists,
        ErrorKind::StorageFull => FsErrorKind::NoSpace,
        _ => FsErrorKind::Other,
    };
    FsError::new(file, kind, error.to_string())
}

impl StdFs {
    /// Uses (and creates if needed) the directory `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, FsError> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| io_error("<dir>", &e))?;
        Ok(StdFs {
            root,
            open: BTreeMap::new(),
            overwrite: BTreeMap::new(),
        })
    }

    /// The directory this file system works in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The append-mode handle of `name` (reads and appends).
    fn handle(&mut self, name: &str) -> Result<&mut File, FsError> {
        kept_handle(
            &mut self.open,
            &self.root,
            name,
            OpenOptions::new().read(true).append(true),
        )
    }
}

/// The handle of `name` in `handles`, opened under `root` with `options` the first time.
fn kept_handle<'a>(
    handles: &'a mut BTreeMap<String, File>,
    root: &Path,
    name: &str,
    options: &OpenOptions,
) -> Result<&'a mut File, FsError> {
    if !handles.contains_key(name) {
        let file = options
            .open(root.join(name))
            .map_err(|e| io_error(name, &e))?;
        handles.insert(name.to_string(), file);
    }
    handles
        .get_mut(name)
        .ok_or_else(|| FsError::new(name, FsErrorKind::Other, "handle vanished"))
}

impl FileSystem for StdFs {
    fn create(&mut self, name: &str) -> Result<(), FsError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.path(name))
            .map_err(|e| io_error(name, &e))?;
        self.open.insert(name.to_string(), file);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), FsError> {
        self.handle(name)?
            .write_all(data)
            .map_err(|e| io_error(name, &e))
    }

    /// Does not check the file's length (an `fstat` per write was a visible share of a node's
    /// WAL writes): a caller writing past the end extends the file here, and the simulated disk,
    /// which every engine test runs on, refuses it.
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        kept_handle(
            &mut self.overwrite,
            &self.root,
            name,
            OpenOptions::new().write(true),
        )?
        .write_all_at(data, offset)
        .map_err(|e| io_error(name, &e))
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let mut buf = vec![0u8; len];
        self.handle(name)?
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io_error(name, &e))?;
        Ok(buf)
    }

    fn len(&mut self, name: &str) -> Result<u64, FsError> {
        Ok(self
            .handle(name)?
            .metadata()
            .map_err(|e| io_error(name, &e))?
            .len())
    }

    fn fsync(&mut self, name: &str) -> Result<(), FsError> {
        self.handle(name)?.sync_data().map_err(|e| FsError {
            kind: FsErrorKind::SyncFailed,
            ..io_error(name, &e)
        })
    }

    fn detached_fsync(&mut self, name: &str) -> Result<Option<DetachedFsync>, FsError> {
        // A second descriptor of the same open file: fsync through it covers every byte written
        // through the first, and stays valid if the file is later removed.
        let file = self
            .handle(name)?
            .try_clone()
            .map_err(|e| io_error(name, &e))?;
        let name = name.to_string();
        Ok(Some(Box::new(move || {
            file.sync_data().map_err(|e| FsError {
                kind: FsErrorKind::SyncFailed,
                ..io_error(&name, &e)
            })
        })))
    }

    fn detached_fsync_dir(&mut self) -> Result<Option<DetachedFsync>, FsError> {
        let root = self.root.clone();
        Ok(Some(Box::new(move || {
            File::open(&root)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| FsError {
                    kind: FsErrorKind::SyncFailed,
                    ..io_error("<dir>", &e)
                })
        })))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), FsError> {
        for handles in [&mut self.open, &mut self.overwrite] {
            handles.remove(from);
            handles.remove(to);
        }
        std::fs::rename(self.path(from), self.path(to)).map_err(|e| io_error(from, &e))
    }

    fn remove(&mut self, name: &str) -> Result<(), FsError> {
        self.open.remove(name);
        self.overwrite.remove(name);
        std::fs::remove_file(self.path(name)).map_err(|e| io_error(name, &e))
    }

    fn list(&mut self) -> Result<Vec<String>, FsError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| io_error("<dir>", &e))? {
            let entry = entry.map_err(|e| io_error("<dir>", &e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn fsync_dir(&mut self) -> Result<(), FsError> {
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| FsError {
                kind: FsErrorKind::SyncFailed,
                ..io_error("<dir>", &e)
            })
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), FsError> {
        self.handle(name)?
            .set_len(len)
            .map_err(|e| io_error(name, &e))
    }

    fn exists(&mut self, name: &str) -> Result<bool, FsError> {
        Ok(self.open.contains_key(name) || self.path(name).exists())
    }

    fn link_to(&mut self, name: &str, target: &mut Self) -> Result<(), FsError> {
        let (from, to) = (self.path(name), target.path(name));
        match std::fs::hard_link(&from, &to) {
            // Another file system (a snapshot directory mounted elsewhere): copy, and make the
            // copy durable, since a copy does not share the original's durable inode.
            Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                std::fs::copy(&from, &to).map_err(|e| io_error(name, &e))?;
                target.fsync(name)
            }
            other => other.map_err(|e| io_error(name, &e)),
        }
    }

    fn reserve_space(&mut self, bytes: u64) -> Result<(), FsError> {
        // Zeros really written (not `set_len`, which makes a sparse file holding no blocks).
        // Never fsynced: its content does not matter, only the blocks it holds.
        self.release_space()?;
        let path = self.path(SPACE_RESERVE_FILE);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let chunk = vec![0u8; 64 << 10];
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.flush()
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            io_error(SPACE_RESERVE_FILE, &e)
        })
    }

    fn release_space(&mut self) -> Result<(), FsError> {
        match std::fs::remove_file(self.path(SPACE_RESERVE_FILE)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(SPACE_RESERVE_FILE, &e)),
            _ => Ok(()),
        }
    }
}
