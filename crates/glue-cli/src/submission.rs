//! The GLUE leaderboard's upload: one TSV per test set (eleven with AX, predicted by
//! the MNLI model), zipped, each checked for its name, row count and label vocabulary.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use glue_data::Task;

use crate::output::write_atomically;

/// Every file the GLUE server accepts, with the config and split it predicts: the
/// nine tasks' test sets, AX among MNLI's.
fn expected_files() -> Vec<(&'static str, Task, &'static str)> {
    Task::GLUE
        .iter()
        .flat_map(|t| t.leaderboard_sets())
        .map(|(t, s)| (s.file_name, t, s.split))
        .collect()
}

/// Checks one leaderboard file: a known name, `index\tprediction`, one row per test
/// example (indices 0..n in order), and values the server accepts for its task.
pub fn check_file(path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((_, task, split)) = expected_files().into_iter().find(|(f, _, _)| *f == name) else {
        bail!("{}: not a GLUE submission file name", path.display());
    };
    let spec = task.spec();
    let rows = spec.split(split)?.num_rows;
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some("index\tprediction") {
        bail!("{name}: the header must be `index<TAB>prediction`");
    }
    let mut count = 0;
    for (i, line) in lines.enumerate() {
        let (index, value) = line
            .split_once('\t')
            .with_context(|| format!("{name} line {}: expected index<TAB>prediction", i + 2))?;
        if index.parse::<usize>().ok() != Some(i) {
            bail!("{name} line {}: index {index}, expected {i}", i + 2);
        }
        let valid = if spec.is_regression() {
            value.parse::<f64>().is_ok_and(|v| (0.0..=5.0).contains(&v))
        } else {
            (0..spec.label_names.len() as i64)
                .any(|c| spec.submission_label(c).as_deref() == Some(value))
        };
        if !valid {
            bail!(
                "{name} line {}: `{value}` is not a valid {task} prediction",
                i + 2
            );
        }
        count += 1;
    }
    if count != rows {
        bail!("{name}: {count} predictions, the {task} {split} split has {rows}");
    }
    Ok(())
}

/// Zips the checked `.tsv` files of `dir` into `zip_path` (written under a temporary
/// name, then renamed). Returns the file names, sorted.
pub fn zip_folder(dir: &Path, zip_path: &Path) -> Result<Vec<String>> {
    let mut files: BTreeSet<(String, PathBuf)> = BTreeSet::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            check_file(&path)?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert((name, path));
        }
    }
    if files.is_empty() {
        bail!("{} has no prediction files to zip", dir.display());
    }
    let mut bytes = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
        let options =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, path) in &files {
            let mut content = Vec::new();
            fs::File::open(path)?.read_to_end(&mut content)?;
            zip.start_file(name.as_str(), options)?;
            zip.write_all(&content)?;
        }
        zip.finish()?;
    }
    write_atomically(zip_path, |o| Ok(o.write_all(&bytes)?))?;
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_files_as_the_server_lists_them() {
        let names: BTreeSet<&str> = expected_files().iter().map(|(f, _, _)| *f).collect();
        let want: BTreeSet<&str> = [
            "AX.tsv",
            "CoLA.tsv",
            "MNLI-m.tsv",
            "MNLI-mm.tsv",
            "MRPC.tsv",
            "QNLI.tsv",
            "QQP.tsv",
            "RTE.tsv",
            "SST-2.tsv",
            "STS-B.tsv",
            "WNLI.tsv",
        ]
        .into();
        assert_eq!(names, want);
    }

    #[test]
    fn wrong_rows_and_labels_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let wnli = dir.path().join("WNLI.tsv");
        fs::write(&wnli, "index\tprediction\n0\t1\n").unwrap();
        let e = check_file(&wnli).unwrap_err().to_string();
        assert!(
            e.contains("1 predictions, the wnli test split has 146"),
            "{e}"
        );
        let rte = dir.path().join("RTE.tsv");
        fs::write(&rte, "index\tprediction\n0\t1\n").unwrap();
        let e = check_file(&rte).unwrap_err().to_string();
        assert!(e.contains("`1` is not a valid rte prediction"), "{e}");
        let other = dir.path().join("rte.tsv");
        fs::write(&other, "index\tprediction\n").unwrap();
        assert!(check_file(&other).is_err());
    }
}
