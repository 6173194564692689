//! Test support shared by the workspace's tests.
//!
//! - [`HubServer`]: a loopback HTTP server that answers like the Hugging Face hub
//!   (`/datasets/{repo}/resolve/{rev}/{file}`, `/{repo}/resolve/{rev}/{file}`), with the
//!   headers hf-hub's client reads: `x-repo-commit`, `etag`/`x-linked-etag` (the file's
//!   sha256, as the hub sends for LFS files), `x-linked-size`, and `Content-Range` for
//!   ranged GETs. Point `HF_ENDPOINT` at [`HubServer::endpoint`].
//! - Paths to the shared GLUE mirror and the pip-installed test model; a missing one
//!   panics with the command that provides it, so a test never passes vacuously.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use tiny_http::{Header, Response, Server};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared/glue-mirror` next to the checkout, or `$GLUE_MIRROR`.
pub fn mirror_dir() -> PathBuf {
    let dir = std::env::var_os("GLUE_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/glue-mirror"));
    assert!(
        dir.join("hub_sha256.json").is_file(),
        "GLUE mirror not found at {}: tests need ../shared/glue-mirror (or set GLUE_MIRROR)",
        dir.display()
    );
    dir
}

/// The test model folder (`.venv/test-model`, made by `cargo xtask setup`), or `$GLUE_TEST_MODEL`.
pub fn test_model_dir() -> PathBuf {
    let dir = std::env::var_os("GLUE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/test-model"));
    assert!(
        dir.join("tokenizer.json").is_file(),
        "test model not found at {}: run `cargo xtask setup` first (or set GLUE_TEST_MODEL)",
        dir.display()
    );
    dir
}

/// The hub's SHA-256 of every mirror file, keyed `<config>/<file>`.
pub fn hub_sha256() -> HashMap<String, String> {
    let text =
        fs::read_to_string(mirror_dir().join("hub_sha256.json")).expect("read hub_sha256.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("parse hub_sha256.json");
    value
        .as_object()
        .expect("hub_sha256.json is an object")
        .iter()
        .filter(|(k, v)| k.ends_with(".parquet") && v.is_string())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// The reference stack's python (`.venv-ref`, from `cargo xtask setup --reference`)
/// for the live HF transformers checks; `None`, said loudly on stderr, where it is not
/// installed (CI installs it, so there the checks run).
pub fn reference_python() -> Option<PathBuf> {
    let python = workspace_root().join(".venv-ref/bin/python");
    if python.exists() {
        Some(python)
    } else {
        // Straight to the stream: libtest captures eprintln!, and this must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the live HF transformers check: .venv-ref is missing. \
             Run `cargo xtask setup --reference` to enable it. ***\n"
        );
        None
    }
}

/// A tiny HF model folder made by a golden script (`tests/golden/<name>-tiny`: config and
/// tokenizer files), with the weights the script recorded in `tests/golden/<name>.json`
/// (`"weights"`: name -> shape and values) written out as `model.safetensors`: weights
/// stay out of the repository as binary files. Built once under `target/golden-models`.
pub fn golden_model_dir(name: &str) -> PathBuf {
    let out = workspace_root().join("target/golden-models").join(name);
    if out.join("model.safetensors").is_file() {
        return out;
    }
    // Unique per call: tests run in threads and in several processes at once.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let tmp = out.with_extension(format!("tmp-{}-{call}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("create a golden model folder");
    let source = workspace_root().join(format!("tests/golden/{name}-tiny"));
    for entry in fs::read_dir(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display())) {
        let entry = entry.unwrap();
        fs::copy(entry.path(), tmp.join(entry.file_name())).unwrap();
    }
    let weights = golden(&format!("{name}.json"))["weights"].clone();
    let weights = weights.as_object().expect("golden has \"weights\"");
    fs::write(tmp.join("model.safetensors"), safetensors_f32(weights)).unwrap();
    // Another test process may have finished first; either folder is the same.
    if fs::rename(&tmp, &out).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    out
}

/// The safetensors format (8-byte little-endian header length, JSON header, raw data)
/// for f32 tensors given as `{"shape": [...], "values": [...]}`.
fn safetensors_f32(weights: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, tensor) in weights {
        let start = data.len();
        for v in json_f64s(&tensor["values"]) {
            data.extend_from_slice(&(v as f32).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": tensor["shape"],
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Reads a golden file of `tests/golden/`.
pub fn golden(name: &str) -> serde_json::Value {
    let path = workspace_root().join("tests/golden").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// scripts/check_hf_load.py's fixed input, `[2, 8]` row-major (0 = padding), each id
/// taken modulo `vocab_size` as the script takes it, so tiny vocabularies get it too.
pub fn hf_check_input_ids(vocab_size: i64) -> Vec<i64> {
    [
        101i64, 2023, 2003, 1037, 2307, 3185, 999, 102, 101, 2023, 2003, 102, 0, 0, 0, 0,
    ]
    .iter()
    .map(|id| id % vocab_size)
    .collect()
}

/// Loads `folder` with HF transformers (scripts/check_hf_load.py) and returns the
/// logits it gives for [`hf_check_input_ids`], after checking that no key was missing,
/// unexpected or mismatched and that the class is `class`. `None` (with a loud note)
/// when `.venv-ref` is missing.
pub fn hf_load_logits(folder: &Path, class: &str) -> Option<Vec<f64>> {
    let python = reference_python()?;
    let out = std::process::Command::new(python)
        .arg(workspace_root().join("scripts/check_hf_load.py"))
        .arg(folder)
        .output()
        .expect("run scripts/check_hf_load.py");
    assert!(
        out.status.success(),
        "check_hf_load.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hf: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its JSON");
    assert_eq!(hf["class"], class, "{hf}");
    for list in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert_eq!(hf[list], serde_json::json!([]), "{hf}");
    }
    Some(json_f64s(&hf["logits"]))
}

/// The largest absolute difference of two equally long number lists.
pub fn max_abs_diff(ours: &[f32], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "element count");
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

/// A JSON array of numbers as `f64`s.
pub fn json_f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// A JSON array of integers as `i64`s.
pub fn json_i64s(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_i64().expect("an integer"))
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Run sizes that keep CLI end-to-end tests inside CI's budget: batches of 4 for
/// training, 64 for evaluation, 48 tokens.
pub const SMALL_RUN_FLAGS: [&str; 6] = [
    "--per-device-train-batch-size",
    "4",
    "--per-device-eval-batch-size",
    "64",
    "--max-seq-length",
    "48",
];

/// Revision every answer claims to come from.
pub const FAKE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One repository the server plays: URL prefix (`datasets/nyu-mll/glue` or `org/model`)
/// and the local folder whose files it serves.
#[derive(Clone)]
struct Mount {
    prefix: String,
    dir: PathBuf,
}

#[derive(Default)]
struct State {
    mounts: Vec<Mount>,
    /// Known sha256 per `<prefix>/<file>`; others are computed.
    etags: HashMap<String, String>,
    /// Files whose body is served damaged (one byte flipped) while headers stay right.
    damaged: Vec<String>,
    requests: Vec<String>,
}

/// A loopback hub; stops when dropped.
pub struct HubServer {
    server: Arc<Server>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl HubServer {
    pub fn start() -> HubServer {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind loopback"));
        let port = server.server_addr().to_ip().expect("ip address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (server, state, stop, served) =
                (server.clone(), state.clone(), stop.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(std::time::Duration::from_millis(100)) {
                        Ok(Some(request)) => {
                            served.fetch_add(1, Ordering::SeqCst);
                            answer(&state, request);
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        HubServer {
            server,
            state,
            stop,
            served,
            thread: Some(thread),
            port,
        }
    }

    /// Serves the GLUE mirror as `datasets/nyu-mll/glue`, with the hub's sha256 etags.
    pub fn with_glue_mirror(self) -> HubServer {
        let etags = hub_sha256()
            .into_iter()
            .map(|(k, v)| (format!("datasets/nyu-mll/glue/{k}"), v));
        {
            let mut s = self.state.lock().unwrap();
            s.mounts.push(Mount {
                prefix: "datasets/nyu-mll/glue".into(),
                dir: mirror_dir(),
            });
            s.etags.extend(etags);
        }
        self
    }

    /// Serves `dir` as the model repository `repo_id` (e.g. `org/name`).
    pub fn with_model(self, repo_id: &str, dir: &Path) -> HubServer {
        self.state.lock().unwrap().mounts.push(Mount {
            prefix: repo_id.to_string(),
            dir: dir.to_path_buf(),
        });
        self
    }

    /// Damages the body of `<prefix>/<file>` from now on (headers keep the true sha256).
    pub fn damage(&self, path: &str) {
        self.state.lock().unwrap().damaged.push(path.to_string());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Paths requested so far (without the host).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn answer(state: &Mutex<State>, request: tiny_http::Request) {
    let url = request.url().trim_start_matches('/').to_string();
    state.lock().unwrap().requests.push(url.clone());
    let found = {
        let s = state.lock().unwrap();
        s.mounts.iter().find_map(|m| {
            let rest = url.strip_prefix(&format!("{}/resolve/", m.prefix))?;
            let (_revision, file) = rest.split_once('/')?;
            let file = file.split('?').next().unwrap_or(file);
            if file.contains("..") {
                return None;
            }
            let key = format!("{}/{file}", m.prefix);
            Some((
                m.dir.join(file),
                s.etags.get(&key).cloned(),
                s.damaged.contains(&key),
            ))
        })
    };
    let Some((path, known_etag, damaged)) = found.filter(|(p, _, _)| p.is_file()) else {
        let response = Response::from_string("Entry not found")
            .with_status_code(404)
            .with_header(header("x-error-code", "EntryNotFound"));
        let _ = request.respond(response);
        return;
    };
    let mut body = Vec::new();
    fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut body))
        .expect("read served file");
    let etag = known_etag.unwrap_or_else(|| sha256_hex(&body));
    if damaged {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let total = body.len();
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| h.value.as_str().to_string());
    let (start, end) = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let start = a.parse::<usize>().unwrap_or(0).min(total);
            let end = b
                .parse::<usize>()
                .map(|e| e + 1)
                .unwrap_or(total)
                .min(total);
            (start, end.max(start))
        })
        .unwrap_or((0, total));
    let status = if range.is_some() { 206 } else { 200 };
    let mut response = Response::from_data(body[start..end].to_vec())
        .with_status_code(status)
        .with_header(header("x-repo-commit", FAKE_COMMIT))
        .with_header(header("etag", &format!("\"{etag}\"")))
        .with_header(header("x-linked-etag", &format!("\"{etag}\"")))
        .with_header(header("x-linked-size", &total.to_string()))
        .with_header(header("accept-ranges", "bytes"));
    if range.is_some() {
        response = response.with_header(header(
            "content-range",
            &format!("bytes {start}-{}/{total}", end.saturating_sub(1)),
        ));
    }
    let _ = request.respond(response);
}
