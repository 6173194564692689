//! Model files from a local folder or the Hugging Face hub, cached as HF caches them
//! (`HF_HOME`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` honoured).

use std::path::{Path, PathBuf};

use glue_hub::{Hub, HubFailure, RepoKind};

/// Why a model's files could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model folder `{0}` not found; pass an existing HF model folder or a hub id like bert-base-uncased")]
    MissingFolder(String),
    #[error("model `{id}` not found: it is not a local folder and the hub has no such repository or file `{file}`")]
    NotFound { id: String, file: String },
    #[error("model folder `{folder}` has no `{file}`; pass a folder saved by save_pretrained (or by glue-cli run)")]
    MissingFile { folder: String, file: String },
    #[error("cannot reach the Hugging Face hub for `{id}` ({message}); pass a local model folder, or set HF_ENDPOINT to a mirror")]
    Unreachable { id: String, message: String },
    #[error(
        "`{id}` is not in the hub cache and HF_HUB_OFFLINE is set; unset it or pass a local folder"
    )]
    Offline { id: String },
    #[error("hub download of `{id}` failed: {message}")]
    Other { id: String, message: String },
}

/// A model source: a local folder, or a hub repository whose files are fetched on demand.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Local(PathBuf),
    Hub(String),
}

impl ModelSource {
    /// A path that exists, or that can only be a path (absolute, `./`, `../`, `~`),
    /// is a folder; anything else is a hub id like `bert-base-uncased` or `org/name`.
    pub fn new(id_or_path: &str) -> ModelSource {
        let path = Path::new(id_or_path);
        let path_like = path.is_absolute()
            || ["./", "../", "~"].iter().any(|p| id_or_path.starts_with(p))
            || id_or_path.matches('/').count() > 1;
        if path.exists() || path_like {
            ModelSource::Local(path.to_path_buf())
        } else {
            ModelSource::Hub(id_or_path.to_string())
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelSource::Local(p) => p.display().to_string(),
            ModelSource::Hub(id) => id.clone(),
        }
    }

    /// Local path of `file`, downloading it if needed. `Ok(None)` when the source
    /// simply has no such file (so callers can try alternatives).
    pub fn file(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        match self {
            ModelSource::Local(dir) => {
                if !dir.is_dir() {
                    return Err(HubError::MissingFolder(dir.display().to_string()));
                }
                let path = dir.join(file);
                Ok(path.is_file().then_some(path))
            }
            ModelSource::Hub(id) => hub_file(id, file),
        }
    }

    /// Like [`ModelSource::file`], but a missing file is an error naming it.
    pub fn require(&self, file: &str) -> Result<PathBuf, HubError> {
        self.file(file)?.ok_or_else(|| match self {
            ModelSource::Local(dir) => HubError::MissingFile {
                folder: dir.display().to_string(),
                file: file.to_string(),
            },
            ModelSource::Hub(id) => HubError::NotFound {
                id: id.clone(),
                file: file.to_string(),
            },
        })
    }
}

fn hub_file(id: &str, file: &str) -> Result<Option<PathBuf>, HubError> {
    let hub = Hub::from_env().map_err(|e| HubError::Other {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    hub.get(id, RepoKind::Model, file).map_err(|e| match e {
        HubFailure::Offline => HubError::Offline { id: id.to_string() },
        HubFailure::Denied => HubError::NotFound {
            id: id.to_string(),
            file: file.to_string(),
        },
        HubFailure::Unreachable(message) => HubError::Unreachable {
            id: id.to_string(),
            message,
        },
        HubFailure::Other(message) => HubError::Other {
            id: id.to_string(),
            message,
        },
    })
}
