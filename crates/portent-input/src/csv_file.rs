//! CSV: `timestamp,value` (long, one series) and `timestamp,<series>,...` (wide, one per column).

use std::collections::HashMap;

use csv::{ByteRecord, ReaderBuilder};
use portent_core::{Labels, Sample, Series, Timestamp};

use crate::error::InputError;
use crate::selector::header_labels;
use crate::timestamp;
use crate::value::parse_value;
use crate::{Options, Parsed};

/// One value column: whom it names and what it holds.
struct Column {
    /// The header as written, for error messages; `None` without a header or with one series.
    header: Option<String>,
    series: Series,
}

/// Reads CSV bytes (no byte-order mark) into one series per value column.
///
/// One reused `ByteRecord`, no per-row allocation. A hand-written splitter for quote-free input
/// was measured at only ~15% faster overall (timestamp and float parsing dominate), not worth a
/// second code path.
pub(crate) fn read_csv(input: &[u8], options: &Options) -> Result<Parsed, InputError> {
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut table = Table::new(input, options.skip_out_of_order);
    let mut rec = ByteRecord::new();
    loop {
        let more = reader
            .read_byte_record(&mut rec)
            .map_err(|e| InputError::Csv {
                line: e.position().map_or(0, |p| line_at(input, offset(p))),
                message: e.to_string(),
            })?;
        if !more {
            return table.finish();
        }
        table.row(rec.position().map_or(0, offset), &rec)?;
    }
}

fn offset(p: &csv::Position) -> usize {
    usize::try_from(p.byte()).unwrap_or(usize::MAX)
}

/// The series being built, row by row.
struct Table<'a> {
    input: &'a [u8],
    /// Fields per row, set by the first row; 0 before it.
    width: usize,
    columns: Vec<Column>,
    /// Where the header row starts, if there is one.
    header_start: Option<usize>,
    /// Data rows so far.
    rows: usize,
    first_start: usize,
    prev_t: Option<Timestamp>,
    prev_start: usize,
    /// The previous row's timestamp as written, for the out-of-order error.
    prev_text: Vec<u8>,
    /// Skip rows not after the previous kept row instead of failing.
    skip_out_of_order: bool,
    /// Rows skipped so, and the 1-based line of the first.
    skipped: u64,
    first_skipped_line: Option<u64>,
}

impl<'a> Table<'a> {
    fn new(input: &'a [u8], skip_out_of_order: bool) -> Self {
        Self {
            input,
            width: 0,
            columns: Vec::new(),
            header_start: None,
            rows: 0,
            first_start: 0,
            prev_t: None,
            prev_start: 0,
            prev_text: Vec::new(),
            skip_out_of_order,
            skipped: 0,
            first_skipped_line: None,
        }
    }

    /// Takes one record starting at byte `start` of the input.
    #[inline]
    fn row(&mut self, start: usize, rec: &ByteRecord) -> Result<(), InputError> {
        if self.width == 0 {
            self.first_row(start, rec)
        } else {
            self.data_row(start, rec)
        }
    }

    /// The first record: a header, or the first data row of a long file.
    fn first_row(&mut self, start: usize, rec: &ByteRecord) -> Result<(), InputError> {
        let line = line_at(self.input, start);
        let width = rec.len();
        if width < 2 {
            return Err(InputError::OneColumn { line });
        }
        self.width = width;
        if is_header(&rec[0]) {
            self.columns = header_columns(rec, line)?;
            self.header_start = Some(start);
            return Ok(());
        }
        if width > 2 {
            return Err(InputError::MissingHeader { line, found: width });
        }
        self.columns = vec![Column {
            header: None,
            series: Series::default(),
        }];
        self.data_row(start, rec)
    }

    #[inline]
    fn data_row(&mut self, start: usize, rec: &ByteRecord) -> Result<(), InputError> {
        let input = self.input;
        // Line numbers are worked out only for an error: see `line_at`.
        let line = || line_at(input, start);
        if rec.len() != self.width {
            return Err(InputError::FieldCount {
                line: line(),
                expected: self.width,
                found: rec.len(),
            });
        }
        let ts = &rec[0];
        let t = timestamp::parse_bytes(ts).map_err(|error| InputError::Timestamp {
            line: line(),
            error,
        })?;
        if self.prev_t.is_some_and(|p| t <= p) {
            if self.skip_out_of_order {
                // The row is compared with the last row kept: a clock that stepped back skips
                // every row until time passes the last kept one again.
                self.skipped += 1;
                self.first_skipped_line.get_or_insert_with(line);
                return Ok(());
            }
            return Err(InputError::OutOfOrder {
                line: line(),
                text: lossy(ts),
                prev_line: line_at(input, self.prev_start),
                prev_text: lossy(&self.prev_text),
            });
        }
        if self.rows == 1 {
            // Reserve from the first row's length: doubling a 2M-sample Vec copies ~60 MB.
            let rows = input.len() / (start - self.first_start).max(8);
            for col in &mut self.columns {
                col.series.samples.reserve(rows);
            }
        } else if self.rows == 0 {
            self.first_start = start;
        }
        for (i, col) in self.columns.iter_mut().enumerate() {
            let cell = &rec[i + 1];
            // Empty means no sample here; whitespace-only counts as empty.
            if cell.is_empty() || cell.trim_ascii().is_empty() {
                continue;
            }
            let Some(v) = parse_value(cell) else {
                return Err(InputError::Value {
                    line: line(),
                    column: i + 2,
                    header: col.header.clone(),
                    text: lossy(cell),
                });
            };
            col.series.samples.push(Sample::new(t, v));
        }
        self.rows += 1;
        self.prev_t = Some(t);
        self.prev_start = start;
        self.prev_text.clear();
        self.prev_text.extend_from_slice(ts);
        Ok(())
    }

    fn finish(self) -> Result<Parsed, InputError> {
        if self.width == 0 {
            return Err(InputError::Empty);
        }
        if let (0, Some(start)) = (self.rows, self.header_start) {
            return Err(InputError::NoRows {
                line: line_at(self.input, start),
            });
        }
        Ok(Parsed {
            series: self.columns.into_iter().map(|c| c.series).collect(),
            skipped: self.skipped,
            first_skipped_line: self.first_skipped_line,
        })
    }
}

/// The 1-based line of the first record starting at or after byte `at`.
///
/// Not the csv crate's `Position::line`: that is the line where reading *began*, before any
/// blank lines it skipped and before the `\n` of a `\r\n` it had not consumed yet, so it can be
/// a line or more early. Counting newlines is O(n), which is fine once, for an error.
fn line_at(input: &[u8], at: usize) -> u64 {
    let at = at.min(input.len());
    let skipped = input[at..]
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    let newlines = input[..at + skipped]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    newlines as u64 + 1
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b.trim_ascii()).into_owned()
}

/// Whether a first row is a header: its first field is not a timestamp.
///
/// Judged by the first character rather than by parsing, so that a file whose first timestamp
/// is malformed reports that timestamp instead of being read as a header. Timestamps start with
/// a digit or a sign; headers (`timestamp`, `time`, pandas' empty index name) do not.
fn is_header(first: &[u8]) -> bool {
    !matches!(
        first.trim_ascii().first(),
        Some(b'0'..=b'9' | b'+' | b'-' | b'.')
    )
}

/// The value columns a header names.
///
/// With a single value column headed `value` (NAB's long format) the series has no labels: the
/// word names no series, and the caller knows better (the file name, for one).
fn header_columns(rec: &ByteRecord, line: u64) -> Result<Vec<Column>, InputError> {
    let width = rec.len();
    let mut columns: Vec<Column> = Vec::with_capacity(width - 1);
    let mut seen: HashMap<Labels, usize> = HashMap::with_capacity(width - 1);
    for i in 1..width {
        let raw = &rec[i];
        let column = i + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|_| InputError::HeaderNotUtf8 { line, column })?
            .trim();
        if text.is_empty() {
            return Err(InputError::EmptyHeader { line, column });
        }
        let labels = if width == 2 && text.eq_ignore_ascii_case("value") {
            Labels::empty()
        } else {
            header_labels(text).map_err(|error| InputError::Header {
                line,
                column,
                error,
            })?
        };
        if let Some(&first) = seen.get(&labels) {
            return Err(InputError::DuplicateColumn {
                line,
                column,
                first,
                header: text.to_owned(),
            });
        }
        seen.insert(labels.clone(), column);
        columns.push(Column {
            header: Some(text.to_owned()),
            series: Series {
                labels,
                samples: Vec::new(),
            },
        });
    }
    if columns.len() == 1 {
        columns[0].header = None;
    }
    Ok(columns)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(s: &str) -> Vec<Series> {
        read_csv(s.as_bytes(), &Options::default()).unwrap().series
    }

    fn err(s: &str) -> String {
        read_csv(s.as_bytes(), &Options::default())
            .unwrap_err()
            .to_string()
    }

    fn points(s: &Series) -> Vec<(i64, f64)> {
        s.samples
            .iter()
            .map(|x| (x.t.millis() / 1000, x.v))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn long_with_header() {
        let s = read("timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,8127\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels, Labels::empty());
        assert_eq!(
            points(&s[0]),
            vec![(1_404_172_800, 10844.0), (1_404_174_600, 8127.0)]
        );
    }

    #[test]
    fn long_without_header_crlf_and_no_final_newline() {
        let s = read("1404172800,1\r\n1404172860,2.5");
        assert_eq!(
            points(&s[0]),
            vec![(1_404_172_800, 1.0), (1_404_172_860, 2.5)]
        );
        let s = read("1404172800000,1\n1404172860000,2\n");
        assert_eq!(
            points(&s[0]),
            vec![(1_404_172_800, 1.0), (1_404_172_860, 2.0)]
        );
    }

    #[test]
    fn nan_and_infinities_are_kept() {
        let s = read("t,value\n1,NaN\n2,+Inf\n3,-Inf\n4,inf\n5,Inf\n6,nan\n");
        let v: Vec<f64> = s[0].samples.iter().map(|x| x.v).collect();
        assert!(v[0].is_nan() && v[5].is_nan());
        assert_eq!(
            v[1..5],
            [
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::INFINITY
            ]
        );
    }

    #[test]
    fn wide_with_selectors_names_and_empty_cells() {
        let s = read(concat!(
            "time,\"http_requests_total{job=\"\"api\"\",code=\"\"500\"\"}\",cpu,cpu usage %\n",
            "2024-01-01T00:00:00Z,1,0.5,\n",
            "2024-01-01T00:01:00Z,,0.6,7\n",
            "2024-01-01T00:02:00Z,3, ,8\n",
        ));
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].labels,
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "500")
            ])
        );
        assert_eq!(s[1].labels, labels(&[("__name__", "cpu")]));
        assert_eq!(s[2].labels, labels(&[("series", "cpu usage %")]));
        let base = 1_704_067_200;
        assert_eq!(points(&s[0]), vec![(base, 1.0), (base + 120, 3.0)]);
        assert_eq!(points(&s[1]), vec![(base, 0.5), (base + 60, 0.6)]);
        assert_eq!(points(&s[2]), vec![(base + 60, 7.0), (base + 120, 8.0)]);
    }

    #[test]
    fn single_named_column_is_a_metric() {
        let s = read("timestamp,node_load1\n0,1\n");
        assert_eq!(s[0].labels, labels(&[("__name__", "node_load1")]));
    }

    #[test]
    fn pandas_empty_index_header() {
        let s = read(",a,b\n2024-01-01,1,2\n");
        assert_eq!(s.len(), 2);
        assert_eq!(points(&s[1]), vec![(1_704_067_200, 2.0)]);
    }

    #[test]
    fn bad_timestamp_names_the_line() {
        assert_eq!(
            err("timestamp,value\n2014-07-01 00:00:00,1\n2014-13-01 00:00:00,2\n"),
            "line 3: timestamp \"2014-13-01 00:00:00\": not a valid date (expected RFC 3339, \
             \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds)"
        );
        // A malformed first timestamp is reported, not taken for a header.
        assert_eq!(
            err("2014-13-01 00:00:00,2\n"),
            "line 1: timestamp \"2014-13-01 00:00:00\": not a valid date (expected RFC 3339, \
             \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds)"
        );
    }

    #[test]
    fn blank_lines_count_in_line_numbers() {
        assert_eq!(
            err("timestamp,value\n\n1,1\n\n2,x\n"),
            "line 5: value \"x\": not a number (expected a number, NaN, Inf, +Inf or -Inf)"
        );
    }

    #[test]
    fn crlf_and_quoted_newlines_count_in_line_numbers() {
        assert_eq!(
            err("timestamp,value\r\n1,1\r\n\r\n2,2\r\n3,x\r\n"),
            "line 5: value \"x\": not a number (expected a number, NaN, Inf, +Inf or -Inf)"
        );
        assert_eq!(
            err("t,\"a\nb\"\n1,1\n2,x\n"),
            "line 4: value \"x\": not a number (expected a number, NaN, Inf, +Inf or -Inf)"
        );
        assert_eq!(
            err("\n\n1,1\n\n0,1\n"),
            "line 5: timestamp 0 is not after line 3's 1: rows must be in time order"
        );
    }

    #[test]
    fn bad_value() {
        assert_eq!(
            err("t,value\n1,1\n2,1.2.3\n"),
            "line 3: value \"1.2.3\": not a number (expected a number, NaN, Inf, +Inf or -Inf)"
        );
        assert_eq!(
            err("t,a,b\n1,1,2\n2,3,abc\n"),
            "line 3: value \"abc\" in column 3 (b): not a number (expected a number, NaN, Inf, \
             +Inf or -Inf)"
        );
    }

    #[test]
    fn field_counts() {
        assert_eq!(
            err("t,a,b\n1,1,2\n2,3,4\n3,5,6\n4,7\n"),
            "line 5: expected 3 fields (timestamp and 2 series), found 2"
        );
        assert_eq!(
            err("1,2\n2,3,4\n"),
            "line 2: expected 2 fields (timestamp and 1 series), found 3"
        );
        assert_eq!(
            err("timestamp\n1\n"),
            "line 1: found 1 field (expected a timestamp and at least one value, separated by \
             commas)"
        );
        assert_eq!(
            err("1,2,3\n"),
            "line 1: 3 fields but no header row (expected a header naming each series, such as \
             timestamp,a,b)"
        );
    }

    #[test]
    fn time_order() {
        assert_eq!(
            err(concat!(
                "timestamp,value\n",
                "2014-07-01 00:00:00,1\n",
                "2014-07-01 00:01:00,1\n",
                "2014-07-01 00:02:00,1\n",
                "2014-07-01 00:03:00,1\n",
                "2014-07-01 00:04:00,1\n",
                "2014-07-01 00:05:00,1\n",
                "2014-07-01 00:10:00,1\n",
                "2014-07-01 00:05:00,1\n",
            )),
            "line 9: timestamp 2014-07-01 00:05:00 is not after line 8's 2014-07-01 00:10:00: \
             rows must be in time order"
        );
        assert_eq!(
            err("t,value\n1,1\n1,2\n"),
            "line 3: timestamp 1 is not after line 2's 1: rows must be in time order"
        );
    }

    #[test]
    fn rows_out_of_time_order_can_be_skipped_and_are_counted() {
        // NAB's machine_temperature_system_failure steps back; several files repeat a timestamp.
        let input = "timestamp,value\n1,10\n2,20\n2,21\n5,50\n3,30\n4,40\n6,60\n";
        let skip = Options {
            skip_out_of_order: true,
        };
        let parsed = read_csv(input.as_bytes(), &skip).unwrap();
        let kept: Vec<(i64, f64)> = parsed.series[0]
            .samples
            .iter()
            .map(|s| (s.t.millis() / 1000, s.v))
            .collect();
        // The first of a duplicated time is kept; rows are compared with the last row kept.
        assert_eq!(kept, [(1, 10.0), (2, 20.0), (5, 50.0), (6, 60.0)]);
        assert_eq!(parsed.skipped, 3);
        assert_eq!(parsed.first_skipped_line, Some(4));
        // In order, nothing is skipped.
        let parsed = read_csv(b"t,v\n1,1\n2,2\n", &skip).unwrap();
        assert_eq!((parsed.skipped, parsed.first_skipped_line), (0, None));
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            err("t,a,b,a\n1,1,2,3\n"),
            "line 1: column 4 (a) names the same series as column 2"
        );
        assert_eq!(
            err("t,\"up{a=\"\"1\"\",b=\"\"2\"\"}\",\"up{b=\"\"2\"\",a=\"\"1\"\"}\"\n1,1,2\n"),
            "line 1: column 3 (up{b=\"2\",a=\"1\"}) names the same series as column 2"
        );
        assert_eq!(
            err("t,a,,b\n1,1,2,3\n"),
            "line 1: column 3 has an empty header (expected a series name or selector)"
        );
        assert_eq!(
            err("t,up{job=api}\n1,1\n"),
            "line 1: column 2: selector \"up{job=api}\": character 8: expected a quoted label \
             value"
        );
        assert_eq!(err("t,value\n"), "line 1: a header but no data rows");
        assert_eq!(
            read_csv(b"t,\xff\n1,1\n", &Options::default())
                .unwrap_err()
                .to_string(),
            "line 1: column 2 header is not valid UTF-8"
        );
    }

    #[test]
    fn quoted_fields_and_spaces() {
        let s = read("\"timestamp\",\"value\"\n\"2014-07-01 00:00:00\",\"1\"\n 1404172900 , 2 \n");
        assert_eq!(
            points(&s[0]),
            vec![(1_404_172_800, 1.0), (1_404_172_900, 2.0)]
        );
    }
}
