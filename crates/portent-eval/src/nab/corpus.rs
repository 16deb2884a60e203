//! The corpus: the data files, their rows, and the scoring windows as row ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use portent_core::Timestamp;

use super::NabError;

/// The share of each file, from its start, that the scorer ignores (NAB's `probationPercent`).
pub const PROBATIONARY_PERCENT: f64 = 0.15;

/// The probationary row count as NAB computes it: `min(floor(0.15 * n), 0.15 * 5000)`.
///
/// NAB compares row indices against this float; both arms are whole numbers (0.15 * 5000 is
/// exactly 750.0 in binary floating point), so the comparison is exact on integers.
fn probation_bound(n: usize) -> f64 {
    (PROBATIONARY_PERCENT * n as f64)
        .floor()
        .min(PROBATIONARY_PERCENT * 5000.0)
}

/// How many leading rows of an `n`-row file are probationary: `min(floor(0.15 * n), 750)`.
///
/// The scorer neither rewards nor penalises detections in these rows, but a detector still
/// receives them, so it can learn from them.
pub fn probationary_len(n: usize) -> usize {
    // A whole number in [0, 750]: the cast is exact.
    probation_bound(n) as usize
}

/// A scoring window: the rows `start..=end` of one file (both ends inclusive).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// The first row in the window.
    pub start: usize,
    /// The last row in the window.
    pub end: usize,
}

impl Window {
    /// The window covering rows `start..=end`.
    pub const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Its width in rows, `end - start + 1` (NAB's window width). Zero if `end < start`.
    pub const fn width(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether `row` lies in the window.
    pub const fn contains(&self, row: usize) -> bool {
        self.start <= row && row <= self.end
    }
}

/// One data file of the corpus with its scoring windows.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusFile {
    /// The corpus key, the path under `data/`: `realKnownCause/nyc_taxi.csv`.
    pub key: String,
    /// The directory under `data/`: `realKnownCause`.
    pub category: String,
    /// The file name without `.csv`: `nyc_taxi`.
    pub name: String,
    /// The timestamp text of every row exactly as the file has it, to write results back verbatim.
    pub raw_timestamps: Vec<String>,
    /// The timestamps, `YYYY-MM-DD HH:MM:SS` read as UTC. Not necessarily increasing: a few NAB
    /// files repeat a timestamp or step back.
    pub timestamps: Vec<Timestamp>,
    /// The values.
    pub values: Vec<f64>,
    /// The scoring windows, as row ranges, sorted and disjoint.
    pub windows: Vec<Window>,
}

impl CorpusFile {
    /// A file of `values` spaced 5 minutes apart from 2014-01-01 00:00:00 UTC, for tests and
    /// examples. The key is `<category>/<name>.csv`.
    pub fn synthetic(
        category: &str,
        name: &str,
        values: Vec<f64>,
        windows: Vec<Window>,
    ) -> Result<Self, NabError> {
        const START_SECS: i64 = 1_388_534_400; // 2014-01-01 00:00:00 UTC
        const STEP_SECS: i64 = 300;
        let key = format!("{category}/{name}.csv");
        let mut raw_timestamps = Vec::with_capacity(values.len());
        let mut timestamps = Vec::with_capacity(values.len());
        for i in 0..values.len() {
            let secs = i64::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(STEP_SECS))
                .and_then(|d| d.checked_add(START_SECS));
            let formatted = secs.and_then(|s| jiff::Timestamp::from_second(s).ok());
            let Some(ts) = formatted else {
                return Err(NabError::Corpus {
                    key,
                    reason: format!("row {i} is beyond the representable time range"),
                });
            };
            let dt = TimeZone::UTC.to_datetime(ts);
            raw_timestamps.push(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                dt.year(),
                dt.month(),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            ));
            timestamps.push(Timestamp::from_millis(ts.as_millisecond()));
        }
        let file = Self {
            key,
            category: category.to_owned(),
            name: name.to_owned(),
            raw_timestamps,
            timestamps,
            values,
            windows,
        };
        file.check()?;
        Ok(file)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many leading rows the scorer ignores; see [`probationary_len`].
    pub fn probationary_len(&self) -> usize {
        probationary_len(self.len())
    }

    /// Whether `row` lies in one of the file's windows (NAB's `label` column).
    pub fn in_window(&self, row: usize) -> bool {
        // Windows are sorted and disjoint: find the last one starting at or before `row`.
        let i = self.windows.partition_point(|w| w.start <= row);
        i > 0 && self.windows[i - 1].contains(row)
    }

    /// Checks what the scorer relies on: one timestamp per value and sorted, disjoint windows
    /// inside the file.
    pub(crate) fn check(&self) -> Result<(), NabError> {
        let err = |reason: String| NabError::Corpus {
            key: self.key.clone(),
            reason,
        };
        if self.raw_timestamps.len() != self.len() || self.timestamps.len() != self.len() {
            return Err(err(format!(
                "{} values but {} timestamps and {} raw timestamps",
                self.len(),
                self.timestamps.len(),
                self.raw_timestamps.len()
            )));
        }
        let mut prev_end: Option<usize> = None;
        for (i, w) in self.windows.iter().enumerate() {
            if w.end < w.start {
                return Err(err(format!(
                    "window {i} ends (row {}) before it starts (row {})",
                    w.end, w.start
                )));
            }
            if w.end >= self.len() {
                return Err(err(format!(
                    "window {i} ends at row {} but the file has {} rows",
                    w.end,
                    self.len()
                )));
            }
            if let Some(prev) = prev_end
                && w.start <= prev
            {
                return Err(err(format!(
                    "window {i} starts at row {}, not after the previous window's end (row {prev}); windows must be sorted and disjoint",
                    w.start
                )));
            }
            prev_end = Some(w.end);
        }
        Ok(())
    }
}

/// The NAB corpus: data files with their scoring windows, sorted by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corpus {
    /// The files, sorted by key. Score vectors are passed in this order.
    pub files: Vec<CorpusFile>,
}

impl Corpus {
    /// Loads the full corpus from NAB's directory layout: `root/data/<category>/<name>.csv` and
    /// `root/labels/combined_windows.json`.
    ///
    /// Every CSV file under `data/` must have an entry in the windows file, so that a partial
    /// windows file is not mistaken for the whole corpus.
    pub fn load(root: &Path) -> Result<Self, NabError> {
        let windows_path = root.join("labels").join("combined_windows.json");
        let corpus = Self::load_with_windows(root, &windows_path)?;
        let keys: BTreeSet<&str> = corpus.files.iter().map(|f| f.key.as_str()).collect();
        let data = root.join("data");
        for path in csv_files_under(&data)? {
            let key = relative_key(&data, &path);
            if !keys.contains(key.as_str()) {
                return Err(NabError::Unlisted {
                    path,
                    windows: windows_path,
                });
            }
        }
        Ok(corpus)
    }

    /// Loads only the files a windows file names, such as `labels/combined_windows_tiny.json`,
    /// from `root/data/`.
    ///
    /// The windows file maps `"<category>/<name>.csv"` to a list of `[start, end]` timestamp
    /// pairs (`YYYY-MM-DD HH:MM:SS` with an optional fraction). As in NAB, each timestamp must
    /// equal the timestamp of exactly one row of the file.
    pub fn load_with_windows(root: &Path, windows_json: &Path) -> Result<Self, NabError> {
        let text = fs::read_to_string(windows_json).map_err(|source| NabError::Io {
            path: windows_json.to_path_buf(),
            source,
        })?;
        let entries: BTreeMap<String, Vec<[String; 2]>> =
            serde_json::from_str(&text).map_err(|source| NabError::Json {
                path: windows_json.to_path_buf(),
                source,
            })?;
        let data = root.join("data");
        let mut files = Vec::with_capacity(entries.len());
        for (key, pairs) in entries {
            let werr = |reason: String| NabError::Windows {
                path: windows_json.to_path_buf(),
                key: key.clone(),
                reason,
            };
            let (category, name) = split_key(&key).map_err(werr)?;
            let path = data.join(category).join(format!("{name}.csv"));
            let rows = read_data_file(&path)?;
            let mut windows = Vec::with_capacity(pairs.len());
            for (i, [start, end]) in pairs.iter().enumerate() {
                let start_row = find_row(&rows.timestamps, start)
                    .map_err(|e| werr(format!("window {i} start {start:?}: {e}")))?;
                let end_row = find_row(&rows.timestamps, end)
                    .map_err(|e| werr(format!("window {i} end {end:?}: {e}")))?;
                windows.push(Window::new(start_row, end_row));
            }
            let file = CorpusFile {
                category: category.to_owned(),
                name: name.to_owned(),
                raw_timestamps: rows.raw,
                timestamps: rows.timestamps,
                values: rows.values,
                windows,
                key: key.clone(),
            };
            file.check().map_err(|e| match e {
                NabError::Corpus { reason, .. } => werr(reason),
                other => other,
            })?;
            files.push(file);
        }
        Ok(Self { files })
    }

    /// A corpus of files built in memory (see [`CorpusFile::synthetic`]), sorted by key.
    /// Keys must be unique and each file must be consistent.
    pub fn from_files(mut files: Vec<CorpusFile>) -> Result<Self, NabError> {
        files.sort_by(|a, b| a.key.cmp(&b.key));
        for pair in files.windows(2) {
            if pair[0].key == pair[1].key {
                return Err(NabError::Corpus {
                    key: pair[0].key.clone(),
                    reason: "two files have this key".to_owned(),
                });
            }
        }
        for f in &files {
            f.check()?;
        }
        Ok(Self { files })
    }

    /// The total number of rows over all files.
    pub fn rows(&self) -> usize {
        self.files.iter().map(CorpusFile::len).sum()
    }

    /// The total number of scoring windows over all files.
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    /// The file with this key, if the corpus has it.
    pub fn file(&self, key: &str) -> Option<&CorpusFile> {
        self.files
            .binary_search_by(|f| f.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.files[i])
    }
}

/// The rows of one data file.
struct Rows {
    raw: Vec<String>,
    timestamps: Vec<Timestamp>,
    values: Vec<f64>,
}

/// Splits `"<category>/<name>.csv"` into its category and name.
fn split_key(key: &str) -> Result<(&str, &str), String> {
    let shape = || {
        format!(
            "key {key:?} is not of the form \"<category>/<name>.csv\" (one directory, no other slashes)"
        )
    };
    let (category, file) = key.split_once('/').ok_or_else(shape)?;
    let name = file.strip_suffix(".csv").ok_or_else(shape)?;
    let bad = |part: &str| {
        part.is_empty()
            || part.starts_with('.')
            || part.contains(['/', '\\'])
            || part.contains('\0')
    };
    if bad(category) || bad(name) {
        return Err(shape());
    }
    Ok((category, name))
}

/// Reads one NAB data file: a `timestamp,value` header, then one row per line.
fn read_data_file(path: &Path) -> Result<Rows, NabError> {
    let file = fs::File::open(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let data_err = |line: u64, reason: String| NabError::Data {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut records = reader.records();
    match records.next() {
        None => {
            return Err(data_err(
                1,
                "empty file: expected the header \"timestamp,value\"".to_owned(),
            ));
        }
        Some(Err(e)) => return Err(csv_error(path, 1, &e)),
        Some(Ok(header)) => {
            if header.len() != 2 || &header[0] != "timestamp" || &header[1] != "value" {
                let found: Vec<&str> = header.iter().collect();
                return Err(data_err(
                    1,
                    format!(
                        "header is {:?}, expected \"timestamp,value\"",
                        found.join(",")
                    ),
                ));
            }
        }
    }
    let mut rows = Rows {
        raw: Vec::new(),
        timestamps: Vec::new(),
        values: Vec::new(),
    };
    let mut expected_line: u64 = 1;
    for record in records {
        expected_line += 1;
        let record = record.map_err(|e| csv_error(path, expected_line, &e))?;
        let line = record.position().map_or(expected_line, |p| p.line());
        if record.len() != 2 {
            let found: Vec<&str> = record.iter().collect();
            return Err(data_err(
                line,
                format!(
                    "expected 2 fields (timestamp,value), found {}: {:?}",
                    record.len(),
                    found.join(",")
                ),
            ));
        }
        let text = &record[0];
        let ts = parse_row_timestamp(text)
            .map_err(|e| data_err(line, format!("timestamp {text:?}: {e}")))?;
        let value_text = &record[1];
        let value: f64 = value_text
            .parse()
            .map_err(|_| data_err(line, format!("value {value_text:?} is not a number")))?;
        rows.raw.push(text.to_owned());
        rows.timestamps.push(ts);
        rows.values.push(value);
    }
    Ok(rows)
}

fn csv_error(path: &Path, fallback_line: u64, e: &csv::Error) -> NabError {
    let line = e.position().map_or(fallback_line, csv::Position::line);
    NabError::Data {
        path: path.to_path_buf(),
        line,
        reason: format!("unreadable CSV: {e}"),
    }
}

/// Parses the leading `YYYY-MM-DD HH:MM:SS` of `text` into a civil date and time, and returns
/// the rest of the text.
fn parse_civil(text: &str) -> Result<(DateTime, &str), String> {
    const SHAPE: &str = "expected YYYY-MM-DD HH:MM:SS";
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err(SHAPE.to_owned());
    }
    let digits = |from: usize, to: usize| -> Result<i32, String> {
        let mut v: i32 = 0;
        for &c in &b[from..to] {
            if !c.is_ascii_digit() {
                return Err(SHAPE.to_owned());
            }
            v = v * 10 + i32::from(c - b'0');
        }
        Ok(v)
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return Err(SHAPE.to_owned());
    }
    let year = digits(0, 4)?;
    let month = digits(5, 7)?;
    let day = digits(8, 10)?;
    let hour = digits(11, 13)?;
    let minute = digits(14, 16)?;
    let second = digits(17, 19)?;
    // Each part has at most four digits, so the narrowing casts cannot truncate.
    let dt = DateTime::new(
        year as i16,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        0,
    )
    .map_err(|e| format!("not a valid date and time: {e}"))?;
    Ok((dt, &text[19..]))
}

/// Parses a data row's timestamp, `YYYY-MM-DD HH:MM:SS`, as UTC.
fn parse_row_timestamp(text: &str) -> Result<Timestamp, String> {
    let (dt, rest) = parse_civil(text)?;
    if !rest.is_empty() {
        return Err("expected YYYY-MM-DD HH:MM:SS and nothing after it".to_owned());
    }
    let ts = TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|e| format!("out of range: {e}"))?;
    Ok(Timestamp::from_millis(ts.as_millisecond()))
}

/// Parses a window edge, `YYYY-MM-DD HH:MM:SS` with an optional `.` and 1 to 9 fraction digits,
/// as nanoseconds since the epoch in UTC.
fn parse_window_timestamp(text: &str) -> Result<i128, String> {
    let (dt, rest) = parse_civil(text)?;
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return Err(
                "expected YYYY-MM-DD HH:MM:SS with an optional fraction of 1 to 9 digits"
                    .to_owned(),
            );
        }
        for (i, c) in frac.bytes().enumerate() {
            let place = 10i128.pow(8 - i as u32);
            nanos += i128::from(c - b'0') * place;
        }
    } else if !rest.is_empty() {
        return Err(
            "expected YYYY-MM-DD HH:MM:SS with an optional fraction of 1 to 9 digits".to_owned(),
        );
    }
    let ts = TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|e| format!("out of range: {e}"))?;
    Ok(ts.as_nanosecond() + nanos)
}

/// The row whose timestamp equals the window edge `text`. As in NAB's labeler, exactly one row
/// must match.
fn find_row(timestamps: &[Timestamp], text: &str) -> Result<usize, String> {
    let want = parse_window_timestamp(text)?;
    let mut found = None;
    let mut count = 0usize;
    for (i, t) in timestamps.iter().enumerate() {
        if i128::from(t.millis()) * 1_000_000 == want {
            count += 1;
            found.get_or_insert(i);
        }
    }
    match (found, count) {
        (Some(i), 1) => Ok(i),
        (None, _) => Err(
            "matches no row of the data file; window edges must equal a row's timestamp exactly"
                .to_owned(),
        ),
        (Some(_), n) => Err(format!(
            "matches {n} rows of the data file; a window edge must match exactly one"
        )),
    }
}

/// All `.csv` files under `dir`, recursively, skipping hidden entries as NAB does.
fn csv_files_under(dir: &Path) -> Result<Vec<PathBuf>, NabError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| NabError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| NabError::Io {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|source| NabError::Io {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The corpus key of a file under `data`: its relative path with `/` separators.
fn relative_key(data: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(data).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probationary_len_follows_nab() {
        assert_eq!(PROBATIONARY_PERCENT * 5000.0, 750.0);
        assert_eq!(probationary_len(0), 0);
        assert_eq!(probationary_len(100), 15);
        assert_eq!(probationary_len(1127), 169); // floor(169.05)
        assert_eq!(probationary_len(4999), 749); // floor(749.85)
        assert_eq!(probationary_len(5000), 750);
        assert_eq!(probationary_len(22_695), 750);
    }

    #[test]
    fn row_timestamps_are_strict_utc() {
        let t = parse_row_timestamp("2014-07-01 00:00:00").unwrap();
        assert_eq!(t.millis(), 1_404_172_800_000);
        for bad in [
            "2014-07-01T00:00:00",
            "2014-07-01 00:00",
            "2014-07-01 00:00:00.5",
            "2014-02-30 00:00:00",
            "2014-07-01 24:00:00",
            " 2014-07-01 00:00:00",
        ] {
            assert!(parse_row_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_timestamps_take_a_fraction() {
        let whole = parse_window_timestamp("2014-07-01 00:00:00").unwrap();
        assert_eq!(whole, 1_404_172_800_000_000_000);
        assert_eq!(
            parse_window_timestamp("2014-07-01 00:00:00.000000").unwrap(),
            whole
        );
        assert_eq!(
            parse_window_timestamp("2014-07-01 00:00:00.5").unwrap(),
            whole + 500_000_000
        );
        assert!(parse_window_timestamp("2014-07-01 00:00:00.").is_err());
        assert!(parse_window_timestamp("2014-07-01 00:00:00Z").is_err());
    }

    #[test]
    fn keys_have_one_directory() {
        assert_eq!(
            split_key("realKnownCause/nyc_taxi.csv").unwrap(),
            ("realKnownCause", "nyc_taxi")
        );
        for bad in [
            "nyc_taxi.csv",
            "a/b/c.csv",
            "a/b.txt",
            "../b.csv",
            "a/.csv",
            "/b.csv",
        ] {
            assert!(split_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn synthetic_files_and_window_lookup() {
        let f = CorpusFile::synthetic(
            "cat",
            "x",
            vec![0.0; 10],
            vec![Window::new(2, 3), Window::new(6, 6)],
        )
        .unwrap();
        assert_eq!(f.key, "cat/x.csv");
        assert_eq!(f.raw_timestamps[1], "2014-01-01 00:05:00");
        assert_eq!(f.timestamps[1].millis(), 1_388_534_700_000);
        let labels: Vec<bool> = (0..10).map(|i| f.in_window(i)).collect();
        assert_eq!(
            labels,
            [
                false, false, true, true, false, false, true, false, false, false
            ]
        );
        let overlap = CorpusFile::synthetic(
            "cat",
            "x",
            vec![0.0; 10],
            vec![Window::new(2, 5), Window::new(5, 6)],
        );
        assert!(
            overlap
                .unwrap_err()
                .to_string()
                .contains("window 1 starts at row 5")
        );
        let outside = CorpusFile::synthetic("cat", "x", vec![0.0; 10], vec![Window::new(8, 10)]);
        assert!(
            outside
                .unwrap_err()
                .to_string()
                .contains("the file has 10 rows")
        );
    }

    /// A corpus directory with one data file and a windows file, for the error tests.
    fn corpus_dir(csv: &str, windows: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("data/cat")).unwrap();
        fs::create_dir_all(dir.path().join("labels")).unwrap();
        fs::write(dir.path().join("data/cat/f.csv"), csv).unwrap();
        fs::write(dir.path().join("labels/combined_windows.json"), windows).unwrap();
        dir
    }

    fn load_err(csv: &str, windows: &str) -> String {
        let dir = corpus_dir(csv, windows);
        Corpus::load(dir.path()).unwrap_err().to_string()
    }

    const GOOD: &str = "timestamp,value\r\n2014-07-01 00:00:00,1\r\n2014-07-01 00:05:00,2.5\r\n2014-07-01 00:10:00,3";

    #[test]
    fn loads_crlf_and_a_missing_final_newline() {
        let dir = corpus_dir(
            GOOD,
            r#"{"cat/f.csv": [["2014-07-01 00:05:00.000000", "2014-07-01 00:10:00.000000"]]}"#,
        );
        let corpus = Corpus::load(dir.path()).unwrap();
        let f = corpus.file("cat/f.csv").unwrap();
        assert_eq!(f.values, [1.0, 2.5, 3.0]);
        assert_eq!(f.raw_timestamps[2], "2014-07-01 00:10:00");
        assert_eq!(f.windows, [Window::new(1, 2)]);
        assert_eq!((f.category.as_str(), f.name.as_str()), ("cat", "f"));
    }

    #[test]
    fn malformed_rows_name_the_file_and_line() {
        let e = load_err(
            "timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,abc\n",
            r#"{"cat/f.csv": []}"#,
        );
        assert!(e.ends_with("f.csv:3: value \"abc\" is not a number"), "{e}");
        let e = load_err(
            "timestamp,value\n2014-07-01 00:00:00,1\n2014/07/01 00:05:00,2\n",
            r#"{"cat/f.csv": []}"#,
        );
        assert!(
            e.contains("f.csv:3: timestamp \"2014/07/01 00:05:00\": expected YYYY-MM-DD HH:MM:SS"),
            "{e}"
        );
        let e = load_err(
            "timestamp,value\n2014-07-01 00:00:00,1,7\n",
            r#"{"cat/f.csv": []}"#,
        );
        assert!(
            e.contains("f.csv:2: expected 2 fields (timestamp,value), found 3"),
            "{e}"
        );
        let e = load_err(
            "time,value\n2014-07-01 00:00:00,1\n",
            r#"{"cat/f.csv": []}"#,
        );
        assert!(e.contains("f.csv:1: header is \"time,value\""), "{e}");
    }

    #[test]
    fn window_problems_name_the_windows_file_and_key() {
        let e = load_err(
            GOOD,
            r#"{"cat/f.csv": [["2014-07-01 00:07:00.000000", "2014-07-01 00:10:00.000000"]]}"#,
        );
        assert!(e.contains("combined_windows.json: cat/f.csv: window 0 start \"2014-07-01 00:07:00.000000\": matches no row"), "{e}");
        let e = load_err(
            GOOD,
            r#"{"cat/f.csv": [["2014-07-01 00:10:00", "2014-07-01 00:05:00"]]}"#,
        );
        assert!(
            e.contains("cat/f.csv: window 0 ends (row 1) before it starts (row 2)"),
            "{e}"
        );
        let dup = "timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:00:00,2\n";
        let e = load_err(
            dup,
            r#"{"cat/f.csv": [["2014-07-01 00:00:00", "2014-07-01 00:00:00"]]}"#,
        );
        assert!(e.contains("matches 2 rows"), "{e}");
        let e = load_err(GOOD, r#"{"cat/f.csv": [["2014-07-01 00:00:00"]]}"#);
        assert!(e.contains("combined_windows.json: invalid length 1"), "{e}");
        let e = load_err(GOOD, r#"{"cat/g.csv": []}"#);
        assert!(e.contains("g.csv: No such file"), "{e}");
        let e = load_err(GOOD, r#"{}"#);
        assert!(e.contains("f.csv: not named in"), "{e}");
    }
}
