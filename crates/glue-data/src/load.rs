//! Parquet files of `nyu-mll/glue` to typed examples, with the schema checked
//! against the registry so a wrong or damaged file fails with its name and column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::task::{SplitSpec, Task, TaskSpec};

/// The gold label of an example. Unlabelled test rows carry `Class(-1)` / `Score(-1.0)`
/// exactly as the hub stores them (mrpc test is the exception: it has real labels).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Label {
    Class(i64),
    Score(f32),
}

impl Label {
    /// True for the hub's "no label" marker of unlabelled test splits.
    pub fn is_missing(self) -> bool {
        match self {
            Label::Class(c) => c < 0,
            Label::Score(s) => s < 0.0,
        }
    }

    pub fn as_f32(self) -> f32 {
        match self {
            Label::Class(c) => c as f32,
            Label::Score(s) => s,
        }
    }
}

/// One row of a GLUE split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The task's text columns, in registry order (one or two).
    pub texts: Vec<String>,
    pub label: Label,
    /// The hub's `idx` column: the source file's line counter, not always the row position.
    pub idx: i32,
}

/// A loaded split: its examples plus where they came from.
#[derive(Debug, Clone)]
pub struct GlueSplit {
    pub task: Task,
    pub split: &'static str,
    pub path: PathBuf,
    pub examples: Vec<Example>,
}

impl GlueSplit {
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    pub fn get(&self, index: usize) -> Result<&Example> {
        self.examples
            .get(index)
            .ok_or_else(|| DataError::IndexOutOfRange {
                index,
                split: self.split.to_string(),
                len: self.examples.len(),
            })
    }

    /// The class name of an example's label, if it has one.
    pub fn label_name(&self, example: &Example) -> Option<&'static str> {
        match example.label {
            Label::Class(c) if c >= 0 => self.task.spec().label_names.get(c as usize).copied(),
            _ => None,
        }
    }
}

/// Where a split's file lives under a data directory (`<dir>/<config>/<split>-00000-of-00001.parquet`).
pub fn split_path(data_dir: &Path, task: Task, split: &SplitSpec) -> PathBuf {
    data_dir.join(task.name()).join(split.file_name())
}

/// Loads a split from `data_dir`, checking schema and row count against the registry.
pub fn load_split(data_dir: &Path, task: Task, split: &str) -> Result<GlueSplit> {
    let spec = task.spec();
    let split_spec = spec.split(split)?;
    let path = split_path(data_dir, task, split_spec);
    if !path.exists() {
        return Err(DataError::MissingData {
            path,
            task: task.name().to_string(),
        });
    }
    let examples = read_examples(&path, spec)?;
    if examples.len() != split_spec.num_rows {
        return Err(DataError::RowCount {
            path,
            expected: split_spec.num_rows,
            found: examples.len(),
        });
    }
    Ok(GlueSplit {
        task,
        split: split_spec.name,
        path,
        examples,
    })
}

/// Opens a parquet file and checks it against the registry without decoding rows;
/// returns the row count from the file's metadata.
pub fn check_file(path: &Path, spec: &TaskSpec) -> Result<usize> {
    let builder = open(path)?;
    check_schema(path, builder.schema().fields(), spec)?;
    Ok(builder.metadata().file_metadata().num_rows() as usize)
}

/// Reads every row of a parquet file of `spec`'s layout.
pub fn read_examples(path: &Path, spec: &TaskSpec) -> Result<Vec<Example>> {
    let builder = open(path)?;
    check_schema(path, builder.schema().fields(), spec)?;
    let rows = builder.metadata().file_metadata().num_rows() as usize;
    let reader = builder.build().map_err(|e| parquet_error(path, e))?;
    let mut examples = Vec::with_capacity(rows);
    for batch in reader {
        let batch = batch.map_err(|e| parquet_error(path, e))?;
        append_batch(path, spec, &batch, &mut examples)?;
    }
    Ok(examples)
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_error(path, e))
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn schema_error(path: &Path, column: &str, problem: impl Into<String>) -> DataError {
    DataError::Schema {
        path: path.to_path_buf(),
        column: column.to_string(),
        problem: problem.into(),
    }
}

fn label_type(spec: &TaskSpec) -> DataType {
    if spec.is_regression() {
        DataType::Float32
    } else {
        DataType::Int64
    }
}

fn check_schema(path: &Path, fields: &arrow::datatypes::Fields, spec: &TaskSpec) -> Result<()> {
    let expected = spec
        .text_columns
        .iter()
        .map(|c| (*c, DataType::Utf8))
        .chain([("label", label_type(spec)), ("idx", DataType::Int32)]);
    for (column, data_type) in expected {
        let field = fields.iter().find(|f| f.name() == column).ok_or_else(|| {
            schema_error(
                path,
                column,
                format!("is missing (task `{}` needs it)", spec.config),
            )
        })?;
        if field.data_type() != &data_type {
            return Err(schema_error(
                path,
                column,
                format!("has type {}, expected {data_type}", field.data_type()),
            ));
        }
    }
    Ok(())
}

fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| schema_error(path, name, "is missing"))?;
    if array.null_count() > 0 {
        return Err(schema_error(
            path,
            name,
            format!("has {} null values", array.null_count()),
        ));
    }
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| schema_error(path, name, "has an unexpected type"))
}

fn append_batch(
    path: &Path,
    spec: &TaskSpec,
    batch: &RecordBatch,
    out: &mut Vec<Example>,
) -> Result<()> {
    let texts = spec
        .text_columns
        .iter()
        .map(|c| column::<StringArray>(path, batch, c))
        .collect::<Result<Vec<_>>>()?;
    let idx = column::<Int32Array>(path, batch, "idx")?;
    let labels: Vec<Label> = if spec.is_regression() {
        let l = column::<Float32Array>(path, batch, "label")?;
        // STS-B similarity is 0..=5; -1 is the hub's "no label" of the test split.
        // Anything else would surface much later as a diverged loss or a wrong metric.
        if let Some(bad) = l
            .values()
            .iter()
            .find(|&&v| v != -1.0 && !(0.0..=5.0).contains(&v))
        {
            return Err(schema_error(
                path,
                "label",
                format!(
                    "holds {bad}, outside 0..=5 (or -1 for no label) for task `{}`",
                    spec.config
                ),
            ));
        }
        l.values().iter().map(|&v| Label::Score(v)).collect()
    } else {
        let l = column::<Int64Array>(path, batch, "label")?;
        let n = spec.label_names.len() as i64;
        if let Some(bad) = l.values().iter().find(|&&v| v < -1 || v >= n) {
            return Err(schema_error(
                path,
                "label",
                format!("holds {bad}, outside -1..{n} for task `{}`", spec.config),
            ));
        }
        l.values().iter().map(|&v| Label::Class(v)).collect()
    };
    for (row, label) in labels.into_iter().enumerate() {
        out.push(Example {
            texts: texts.iter().map(|a| a.value(row).to_string()).collect(),
            label,
            idx: idx.value(row),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::ArrayRef;
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// A one-file pair task split with the given label column.
    fn write_pairs(name: &str, label: ArrayRef) -> PathBuf {
        let n = label.len();
        let text = |s: &str| Arc::new(StringArray::from(vec![s; n])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            ("sentence1", text("a cat sat")),
            ("sentence2", text("a cat was sitting")),
            ("label", label),
            (
                "idx",
                Arc::new(Int32Array::from_iter_values(0..n as i32)) as ArrayRef,
            ),
        ])
        .unwrap();
        let path =
            std::env::temp_dir().join(format!("glue-data-{}-{name}.parquet", std::process::id()));
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    fn load_error(path: &Path, task: Task) -> String {
        let result = read_examples(path, task.spec());
        let _ = std::fs::remove_file(path);
        result.expect_err("the file must be refused").to_string()
    }

    #[test]
    fn stsb_scores_outside_zero_to_five_or_nan_are_refused() {
        for (name, bad) in [("nan", f32::NAN), ("high", 5.5), ("negative", -0.5)] {
            let label = Arc::new(Float32Array::from(vec![1.0, bad, -1.0])) as ArrayRef;
            let message = load_error(&write_pairs(name, label), Task::Stsb);
            assert!(message.contains("outside 0..=5"), "{name}: {message}");
            assert!(message.contains("label"), "{name}: {message}");
        }
    }

    #[test]
    fn stsb_scores_in_range_and_the_no_label_marker_load() {
        let label = Arc::new(Float32Array::from(vec![0.0, 5.0, 2.4, -1.0])) as ArrayRef;
        let path = write_pairs("ok", label);
        let examples = read_examples(&path, Task::Stsb.spec());
        let _ = std::fs::remove_file(&path);
        let examples = examples.unwrap();
        assert_eq!(examples.len(), 4);
        assert!(examples[3].label.is_missing());
    }

    #[test]
    fn class_labels_outside_the_task_classes_are_refused() {
        let label = Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef;
        let message = load_error(&write_pairs("class", label), Task::Mrpc);
        assert!(message.contains("outside -1..2"), "{message}");
    }
}
