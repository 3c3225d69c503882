//! Checkpoints: operator snapshots of the whole queue state, taken while the host
//! runs. Each is a redb file `checkpoints/<id>.redb` with a sidecar
//! `<id>.json` (id, time, storage schema version, counts by state, size). All
//! file access goes through the data folder's capability handle.

use std::sync::Arc;

use cap_std::fs::Dir;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::model::{JobState, now_ms};
use crate::store::{PendingErasure, SCHEMA_VERSION, Store};

/// Folder of the data directory holding checkpoints.
pub const FOLDER: &str = "checkpoints";

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub schema_version: u64,
    /// Jobs by state at the moment of the checkpoint, over every tenant.
    #[schema(value_type = Object)]
    pub jobs: serde_json::Map<String, serde_json::Value>,
    /// Size of the checkpoint file.
    pub bytes: u64,
}

pub struct Checkpoints {
    dir: Arc<Dir>,
    store: Arc<dyn Store>,
    /// Held while a checkpoint file is written, scrubbed or read: an erasure never
    /// misses a checkpoint being made, and redb's file lock is never contended.
    busy: tokio::sync::Mutex<()>,
}

/// Ids are ours (`cp-` and 32 hex digits): anything else never reaches the file system.
fn check_id(id: &str) -> Result<()> {
    let ok = id.len() == 35 && id.starts_with("cp-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok { Ok(()) } else { Err(Error::not_found("checkpoint")) }
}

impl Checkpoints {
    pub fn open(data: &Dir, store: Arc<dyn Store>) -> anyhow::Result<Checkpoints> {
        data.create_dir_all(FOLDER)?;
        Ok(Checkpoints { dir: Arc::new(data.open_dir(FOLDER)?), store, busy: tokio::sync::Mutex::new(()) })
    }

    /// Export the current state; the host keeps serving while it runs.
    pub async fn create(&self) -> Result<Checkpoint> {
        let _busy = self.busy.lock().await;
        let id = format!("cp-{}", uuid::Uuid::now_v7().simple());
        let created_at = now_ms();
        let (dir, store, name) = (self.dir.clone(), self.store.clone(), format!("{id}.redb"));
        let counts = tokio::task::spawn_blocking(move || store.export(&dir, &name))
            .await
            .map_err(|e| Error::internal(format!("checkpoint: {e}")))??;
        let mut checkpoint =
            Checkpoint { id, created_at, schema_version: SCHEMA_VERSION, jobs: Default::default(), bytes: 0 };
        self.write_sidecar(&mut checkpoint, counts)?;
        Ok(checkpoint)
    }

    /// Record the file's counts and size in its sidecar.
    fn write_sidecar(&self, checkpoint: &mut Checkpoint, counts: Vec<(JobState, u64)>) -> Result<()> {
        checkpoint.jobs = counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n.into())).collect();
        checkpoint.bytes = self.dir.metadata(format!("{}.redb", checkpoint.id)).map_err(Error::internal)?.len();
        // Written aside and renamed, so a reader never sees half a sidecar.
        let (partial, name) = (format!("{}.json.partial", checkpoint.id), format!("{}.json", checkpoint.id));
        self.dir
            .write(&partial, serde_json::to_vec_pretty(&checkpoint).expect("serialisable"))
            .map_err(Error::internal)?;
        self.dir.rename(&partial, &self.dir, &name).map_err(Error::internal)
    }

    /// Remove deleted users from every checkpoint file (each written anew).
    /// Returns how many files changed.
    pub async fn scrub(&self, subjects: &[PendingErasure]) -> Result<u64> {
        let _busy = self.busy.lock().await;
        let mut changed = 0;
        for mut checkpoint in self.list()? {
            let (dir, store, name) = (self.dir.clone(), self.store.clone(), format!("{}.redb", checkpoint.id));
            let subjects = subjects.to_vec();
            let counts = tokio::task::spawn_blocking(move || store.scrub_checkpoint(&dir, &name, &subjects))
                .await
                .map_err(|e| Error::internal(format!("checkpoint: {e}")))??;
            if let Some(counts) = counts {
                self.write_sidecar(&mut checkpoint, counts)?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    pub fn list(&self) -> Result<Vec<Checkpoint>> {
        let mut all = Vec::new();
        for entry in self.dir.entries().map_err(Error::internal)? {
            let name = entry.map_err(Error::internal)?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            // A checkpoint deleted meanwhile is simply not listed.
            match self.get(id) {
                Ok(checkpoint) => all.push(checkpoint),
                Err(e) if e.code == crate::error::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    pub fn get(&self, id: &str) -> Result<Checkpoint> {
        check_id(id)?;
        let text = self.dir.read(format!("{id}.json")).map_err(|_| Error::not_found("checkpoint"))?;
        serde_json::from_slice(&text).map_err(|e| Error::internal(format!("checkpoint {id}: {e}")))
    }

    /// The part of checkpoint `id` that a restore of `scope` puts back.
    pub async fn read_snapshot(&self, id: &str, scope: &crate::store::RestoreScope) -> Result<crate::store::Snapshot> {
        check_id(id)?;
        // One opener of a checkpoint file at a time (redb locks the file).
        let _busy = self.busy.lock().await;
        let (dir, store, name, scope) = (self.dir.clone(), self.store.clone(), format!("{id}.redb"), scope.clone());
        tokio::task::spawn_blocking(move || store.read_snapshot(&dir, &name, &scope))
            .await
            .map_err(|e| Error::internal(format!("checkpoint: {e}")))?
    }

    pub fn delete(&self, id: &str) -> Result<Checkpoint> {
        let checkpoint = self.get(id)?;
        self.dir.remove_file(format!("{id}.json")).map_err(Error::internal)?;
        self.dir.remove_file(format!("{id}.redb")).map_err(Error::internal)?;
        Ok(checkpoint)
    }
}
