//! File sources for `portent detect FILE`: CSV and Prometheus API JSON, read into
//! [`Series`].
//!
//! Three layouts, told apart by content ([`Format::Auto`]: JSON if the first non-blank character
//! is `{`, CSV otherwise):
//!
//! * **long CSV**, `timestamp,value`, with or without that header (NAB's files): one series,
//!   with no labels (the caller may name it after the file);
//! * **wide CSV**, `timestamp,<series>,<series>,...`: one series per column. A header is a series
//!   selector (`http_requests_total{job="api",code="500"}`), a metric name (`__name__`), or any
//!   other text (the label `series`). An empty cell is no sample;
//! * **Prometheus HTTP API JSON**, a `query_range` (matrix) or `query` (vector) response.
//!
//! CSV timestamps may be RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), or unix seconds or milliseconds
//! (see [`parse_timestamp`]). Values are numbers, `NaN` or infinities; NaN and infinities are kept
//! as samples. Within a series time must strictly increase.
//!
//! Every error says where (`line 17:`, or a JSON path), what is wrong and what was expected.
//!
//! ```
//! use portent_input::{Format, read};
//!
//! let csv = "timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,NaN\n";
//! let series = read(csv.as_bytes(), Format::Auto)?;
//! assert_eq!(series.len(), 1);
//! assert_eq!(series[0].samples[0].t.millis(), 1_404_172_800_000);
//! assert!(series[0].samples[1].v.is_nan());
//!
//! let json = r#"{"status":"success","data":{"resultType":"matrix","result":[
//!     {"metric":{"__name__":"up","job":"api"},"values":[[1435781430,"1"],[1435781445,"0"]]}]}}"#;
//! let series = read(json.as_bytes(), Format::Auto)?;
//! assert_eq!(series[0].labels.to_string(), r#"up{job="api"}"#);
//!
//! let bad = "timestamp,value\n2014-07-01 00:00:00,1\n2014-13-01 00:00:00,2\n";
//! let err = read(bad.as_bytes(), Format::Csv).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"line 3: timestamp "2014-13-01 00:00:00": not a valid date (expected RFC 3339, "YYYY-MM-DD HH:MM:SS", or unix seconds/milliseconds)"#
//! );
//! # Ok::<(), portent_input::InputError>(())
//! ```
//!
//! The whole input is read into memory first: serde_json parses a slice several times faster
//! than a reader, and the series end up in memory anyway.

mod csv_file;
mod error;
mod prom_json;
mod selector;
mod timestamp;
mod value;

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use portent_core::Series;

pub use error::{FileError, InputError};
pub use selector::{SelectorError, parse_selector};
pub use timestamp::{MILLIS_THRESHOLD, TimestampError, parse_timestamp};

/// Which layout to read.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON if the first non-blank character is `{`, CSV otherwise.
    #[default]
    Auto,
    /// Long or wide CSV.
    Csv,
    /// A Prometheus HTTP API `query_range` or `query` response.
    PromJson,
}

/// A format name that is none of `auto`, `csv`, `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("format {0:?}: expected auto, csv or json")]
pub struct UnknownFormat(pub String);

/// `auto`, `csv`, or `json` (also `prom-json`), in any case.
impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "csv" => Ok(Format::Csv),
            "json" | "prom-json" => Ok(Format::PromJson),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// How lenient reading is. The default is strict: any row out of time order is an error.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Skip CSV rows whose time is not after the last row kept (duplicated timestamps, a clock
    /// that stepped back) instead of failing; [`Parsed`] counts them. Prometheus API JSON is
    /// always in order and stays strict.
    pub skip_out_of_order: bool,
}

/// Series read from an input, and what was left out of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// One per value column, or per result of a JSON response.
    pub series: Vec<Series>,
    /// Rows skipped under [`Options::skip_out_of_order`].
    pub skipped: u64,
    /// The 1-based line of the first skipped row.
    pub first_skipped_line: Option<u64>,
}

/// Reads a file into series; errors name the file (`data.csv: line 17: ...`).
pub fn read_file(path: &Path, format: Format) -> Result<Vec<Series>, FileError> {
    read_file_with(path, format, &Options::default()).map(|p| p.series)
}

/// Reads a file into series with `options`; errors name the file.
pub fn read_file_with(path: &Path, format: Format, options: &Options) -> Result<Parsed, FileError> {
    let wrap = |error| FileError {
        path: path.to_owned(),
        error,
    };
    let bytes = std::fs::read(path).map_err(|e| wrap(InputError::Io(e)))?;
    parse_with(&bytes, format, options).map_err(wrap)
}

/// Reads everything from `reader` into series.
pub fn read<R: Read>(mut reader: R, format: Format) -> Result<Vec<Series>, InputError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(InputError::Io)?;
    parse(&bytes, format)
}

/// Parses bytes already in memory into series.
pub fn parse(input: &[u8], format: Format) -> Result<Vec<Series>, InputError> {
    parse_with(input, format, &Options::default()).map(|p| p.series)
}

/// Parses bytes already in memory into series, with `options`.
pub fn parse_with(input: &[u8], format: Format, options: &Options) -> Result<Parsed, InputError> {
    // Spreadsheets write a UTF-8 byte-order mark; it is not part of the first header.
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let Some(&first) = input.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(InputError::Empty);
    };
    match format {
        Format::Auto if first == b'{' => prom_json::read_prom_json(input).map(Parsed::from),
        Format::PromJson => prom_json::read_prom_json(input).map(Parsed::from),
        Format::Auto | Format::Csv => csv_file::read_csv(input, options),
    }
}

impl From<Vec<Series>> for Parsed {
    fn from(series: Vec<Series>) -> Self {
        Self {
            series,
            ..Self::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    const NYC_TAXI: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/datasets/nab/data/realKnownCause/nyc_taxi.csv"
    );

    #[test]
    fn reads_nab_nyc_taxi() {
        let s = read_file(Path::new(NYC_TAXI), Format::Auto).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].samples.len(), 10320);
        assert_eq!(s[0].median_step(), Some(30 * 60 * 1000));
        assert_eq!(s[0].samples[0].v, 10844.0);
    }

    #[test]
    fn auto_detects_json_and_csv() {
        let json = br#"  {"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse(json, Format::Auto).unwrap().is_empty());
        assert!(parse(json, Format::PromJson).unwrap().is_empty());
        let csv = b"\xEF\xBB\xBFtimestamp,value\n0,1\n";
        assert_eq!(parse(csv, Format::Auto).unwrap()[0].samples.len(), 1);
        // Forced formats are honoured.
        assert!(parse(b"0,1\n", Format::PromJson).is_err());
        let e = parse(json, Format::Csv).unwrap_err().to_string();
        assert!(e.starts_with("line 1: "), "{e}");
    }

    #[test]
    fn empty_input() {
        for input in ["", "  \n\t\n", "\u{feff}\n"] {
            for format in [Format::Auto, Format::Csv, Format::PromJson] {
                assert_eq!(
                    parse(input.as_bytes(), format).unwrap_err().to_string(),
                    "empty input (expected CSV rows or a Prometheus API JSON response)"
                );
            }
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(b"timestamp,value\n1,1\n2,x\n").unwrap();
        let e = read_file(f.path(), Format::Auto).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 3: value \"x\": not a number (expected a number, NaN, Inf, +Inf or -Inf)",
                f.path().display()
            )
        );
        assert!(matches!(e.error, InputError::Value { line: 3, .. }));

        let missing = Path::new("/nonexistent/data.csv");
        let e = read_file(missing, Format::Auto).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/data.csv: "), "{e}");
    }

    #[test]
    fn format_names() {
        assert_eq!("CSV".parse(), Ok(Format::Csv));
        assert_eq!("json".parse(), Ok(Format::PromJson));
        assert_eq!("prom-json".parse(), Ok(Format::PromJson));
        assert_eq!("auto".parse(), Ok(Format::Auto));
        assert_eq!(
            "xml".parse::<Format>().unwrap_err().to_string(),
            "format \"xml\": expected auto, csv or json"
        );
    }
}
