//! What can be wrong with an input, said so that the user knows what to change.
//!
//! CSV errors start with the line as an editor numbers it; JSON errors with the line and column
//! serde_json reports, or with the JSON path (`data.result[2].values[17]`) of the bad element.
//! Each message is complete on its own: none has a `source()`, so printing a chain never repeats.

use std::path::PathBuf;

use portent_core::LabelsError;

use crate::selector::SelectorError;
use crate::timestamp::TimestampError;
use crate::value::EXPECTED_VALUE;

/// Why an input could not be read as series.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Reading the bytes failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// Nothing but whitespace.
    #[error("empty input (expected CSV rows or a Prometheus API JSON response)")]
    Empty,

    /// A CSV timestamp that is none of the accepted forms.
    #[error("line {line}: {error}")]
    Timestamp {
        /// 1-based line of the row.
        line: u64,
        /// What is wrong with it.
        error: TimestampError,
    },
    /// A CSV cell that is not a number.
    #[error("line {line}: value {text:?}{}: not a number ({EXPECTED_VALUE})", in_column(*column, header.as_deref()))]
    Value {
        /// 1-based line of the row.
        line: u64,
        /// 1-based CSV column of the cell.
        column: usize,
        /// The column's header, when the file has more than one series.
        header: Option<String>,
        /// The cell as written.
        text: String,
    },
    /// A CSV row with more or fewer cells than the header.
    #[error("line {line}: expected {expected} fields (timestamp and {} series), found {found}", expected - 1)]
    FieldCount {
        /// 1-based line of the row.
        line: u64,
        /// Fields in the first row.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A CSV row whose time is not after the previous row's.
    #[error(
        "line {line}: timestamp {text} is not after line {prev_line}'s {prev_text}: rows must be in time order"
    )]
    OutOfOrder {
        /// 1-based line of the row.
        line: u64,
        /// Its timestamp as written.
        text: String,
        /// 1-based line of the previous row.
        prev_line: u64,
        /// The previous row's timestamp as written.
        prev_text: String,
    },
    /// A first row with fewer than two fields.
    #[error(
        "line {line}: found 1 field (expected a timestamp and at least one value, separated by commas)"
    )]
    OneColumn {
        /// 1-based line of the row.
        line: u64,
    },
    /// Several value columns but no header row to name them.
    #[error(
        "line {line}: {found} fields but no header row (expected a header naming each series, such as timestamp,a,b)"
    )]
    MissingHeader {
        /// 1-based line of the first row.
        line: u64,
        /// Fields in that row.
        found: usize,
    },
    /// A header cell that is empty.
    #[error(
        "line {line}: column {column} has an empty header (expected a series name or selector)"
    )]
    EmptyHeader {
        /// 1-based line of the header.
        line: u64,
        /// 1-based column.
        column: usize,
    },
    /// A header cell that is not UTF-8.
    #[error("line {line}: column {column} header is not valid UTF-8")]
    HeaderNotUtf8 {
        /// 1-based line of the header.
        line: u64,
        /// 1-based column.
        column: usize,
    },
    /// A header cell that reads as a selector but is not a valid one.
    #[error("line {line}: column {column}: {error}")]
    Header {
        /// 1-based line of the header.
        line: u64,
        /// 1-based column.
        column: usize,
        /// What is wrong with the selector.
        error: SelectorError,
    },
    /// Two header cells that name the same series.
    #[error("line {line}: column {column} ({header}) names the same series as column {first}")]
    DuplicateColumn {
        /// 1-based line of the header.
        line: u64,
        /// 1-based column of the repeat.
        column: usize,
        /// 1-based column that named the series first.
        first: usize,
        /// The repeat's header as written.
        header: String,
    },
    /// A header and nothing else.
    #[error("line {line}: a header but no data rows")]
    NoRows {
        /// 1-based line of the header.
        line: u64,
    },
    /// Malformed CSV that the csv crate refused.
    #[error("line {line}: {message}")]
    Csv {
        /// 1-based line where it was found.
        line: u64,
        /// The csv crate's description.
        message: String,
    },

    /// Malformed JSON, or JSON that is not a Prometheus API response.
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde_json found wrong.
        message: String,
    },
    /// A well-formed response in which Prometheus reports a failed query.
    #[error("prometheus returned an error: {error_type}: {message}")]
    Prometheus {
        /// Prometheus' `errorType`, e.g. `bad_data`.
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// A `status` other than `success` or `error`.
    #[error("status {0:?}: expected \"success\" or \"error\"")]
    Status(String),
    /// `status` is `success` but `data` is missing.
    #[error("status is \"success\" but there is no data")]
    NoData,
    /// A `scalar` or `string` result, which has no series.
    #[error("data.resultType {0:?} has no series (expected \"matrix\" or \"vector\")")]
    ResultType(String),
    /// A metric with an invalid label name.
    #[error("data.result[{index}].metric: {error}")]
    MetricLabels {
        /// Index in `data.result`.
        index: usize,
        /// What is wrong with the labels.
        error: LabelsError,
    },
    /// A value string that is not a number.
    #[error("{at} ({series}): value {text:?}: not a number ({EXPECTED_VALUE})")]
    JsonValue {
        /// JSON path of the sample, e.g. `data.result[0].values[3]`.
        at: String,
        /// The series, in Prometheus' notation.
        series: String,
        /// The value string.
        text: String,
    },
    /// A sample time outside the years -9999 to 9999.
    #[error("{at} ({series}): time {} is out of range (expected unix seconds)", secs(*time))]
    JsonTime {
        /// JSON path of the sample.
        at: String,
        /// The series, in Prometheus' notation.
        series: String,
        /// The time as read.
        time: f64,
    },
    /// Samples of one series not strictly increasing in time.
    #[error(
        "{at} ({series}): time {} is not after values[{prev}]'s {}: samples must be in time order",
        secs(*time),
        secs(*prev_time)
    )]
    JsonOutOfOrder {
        /// JSON path of the sample.
        at: String,
        /// The series, in Prometheus' notation.
        series: String,
        /// Its time in unix seconds.
        time: f64,
        /// Index of the previous sample.
        prev: usize,
        /// The previous sample's time.
        prev_time: f64,
    },
    /// Two results with the same labels.
    #[error("data.result[{index}] ({series}) is the same series as data.result[{first}]")]
    DuplicateSeries {
        /// Index of the repeat in `data.result`.
        index: usize,
        /// Index of the first.
        first: usize,
        /// The series, in Prometheus' notation.
        series: String,
    },
    /// Native histogram samples, which the models do not take.
    #[error(
        "data.result[{index}] ({series}) has native histogram samples, which portent cannot read (expected float samples)"
    )]
    Histograms {
        /// Index in `data.result`.
        index: usize,
        /// The series, in Prometheus' notation.
        series: String,
    },
}

/// Unix seconds as JSON would write them: `1435781430.781`, `2`, `1e300`.
fn secs(t: f64) -> String {
    if t.abs() < 1e16 {
        t.to_string()
    } else {
        format!("{t:e}")
    }
}

fn in_column(column: usize, header: Option<&str>) -> String {
    header.map_or_else(String::new, |h| format!(" in column {column} ({h})"))
}

/// An [`InputError`] in a named file: `data.csv: line 17: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: InputError,
}
