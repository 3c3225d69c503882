//! The database file as redb's storage backend, counting its fsyncs: the
//! benchmark and `/health` report them beside the commits, so the durability
//! claim (every acknowledged write was synced) can be checked from outside.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What redb's file backend returns for I/O (`std::io::Error` with std).
type BackendIoError = std::io::Error;

#[derive(Debug)]
pub struct CountedFile {
    file: FileBackend,
    syncs: Arc<AtomicU64>,
}

impl CountedFile {
    pub fn new(file: FileBackend, syncs: Arc<AtomicU64>) -> CountedFile {
        CountedFile { file, syncs }
    }
}

impl StorageBackend for CountedFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}
