#![doc = include_str!("../README.md")]

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};

/// Why the hub did not give a file (a missing file is `Ok(None)`, not a failure).
#[derive(Debug, thiserror::Error)]
pub enum HubFailure {
    /// 401/403: a private or gated repository, or one that does not exist.
    #[error("access denied (a private or gated repository, or no such repository)")]
    Denied,
    /// No HTTP answer at all (DNS, connection refused, TLS, timeout).
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// HF_HUB_OFFLINE is set and the file is not in the cache.
    #[error("not in the hub cache and HF_HUB_OFFLINE is set")]
    Offline,
    #[error("{0}")]
    Other(String),
}

/// Model or dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// hf-hub stores each file as `blobs/<etag>`; for LFS files the etag is the sha256.
pub fn etag_of(pointer: &Path) -> Option<String> {
    let blob = std::fs::canonicalize(pointer).ok()?;
    let name = blob.file_name()?.to_str()?.to_string();
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// The hub client and its cache, configured from the environment.
pub struct Hub {
    api: Api,
    cache: Cache,
    offline: bool,
}

impl Hub {
    pub fn from_env() -> Result<Hub, HubFailure> {
        let api = ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| HubFailure::Other(format!("cannot set up the hub client: {e}")))?;
        Ok(Hub {
            api,
            cache: Cache::from_env(),
            offline: offline_from_env(),
        })
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    fn repo(id: &str, kind: RepoKind) -> Repo {
        let kind = match kind {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::new(id.to_string(), kind)
    }

    /// The cached copy of `file`, if any (no network).
    pub fn cached(&self, id: &str, kind: RepoKind, file: &str) -> Option<PathBuf> {
        self.cache.repo(Self::repo(id, kind)).get(file)
    }

    /// Downloads `file` into the cache, reporting to `progress`; `Ok(None)` when the
    /// repository has no such file (404).
    pub fn download(
        &self,
        id: &str,
        kind: RepoKind,
        file: &str,
        progress: impl Progress,
    ) -> Result<Option<PathBuf>, HubFailure> {
        if self.offline {
            return Err(HubFailure::Offline);
        }
        match self
            .api
            .repo(Self::repo(id, kind))
            .download_with_progress(file, progress)
        {
            Ok(path) => Ok(Some(path)),
            Err(ApiError::RequestError(e)) => match *e {
                ureq::Error::Status(404, _) => Ok(None),
                ureq::Error::Status(401 | 403, _) => Err(HubFailure::Denied),
                ureq::Error::Transport(t) => Err(HubFailure::Unreachable(t.to_string())),
                other => Err(HubFailure::Other(other.to_string())),
            },
            Err(e) => Err(HubFailure::Other(e.to_string())),
        }
    }

    /// The cached copy, else a download without progress output.
    pub fn get(&self, id: &str, kind: RepoKind, file: &str) -> Result<Option<PathBuf>, HubFailure> {
        match self.cached(id, kind, file) {
            Some(path) => Ok(Some(path)),
            None => self.download(id, kind, file, ()),
        }
    }
}
