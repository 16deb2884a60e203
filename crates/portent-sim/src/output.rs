//! Files: samples in long CSV, ground truth in JSON or CSV.

use std::io::{self, Write};

use portent_core::{Labels, Sample};

use crate::scenario::{GroundTruth, TruthRecord};

/// Writes samples as long CSV: `timestamp,series,value`, the timestamp in ms since the epoch
/// and the series in Prometheus notation (`metric{a="x", b="y"}`, quoted as CSV requires).
#[derive(Debug)]
pub struct CsvWriter<W: Write> {
    inner: csv::Writer<W>,
    rows: u64,
}

impl<W: Write> CsvWriter<W> {
    /// A writer that has written the header.
    pub fn new(out: W) -> io::Result<Self> {
        let mut inner = csv::Writer::from_writer(out);
        inner.write_record(["timestamp", "series", "value"])?;
        Ok(Self { inner, rows: 0 })
    }

    /// Writes one sample.
    pub fn write(&mut self, labels: &Labels, sample: Sample) -> io::Result<()> {
        // Rust's `{}` for f64 is the shortest text that reads back as the same number.
        let (t, v) = (sample.t.millis().to_string(), sample.v.to_string());
        self.inner
            .write_record([t.as_str(), &labels.to_string(), &v])?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far, header excluded.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the destination.
    pub fn finish(self) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

/// Writes the ground truth as a JSON array of [`TruthRecord`]s.
pub fn write_truth_json<W: Write>(truth: &[GroundTruth], out: W) -> io::Result<()> {
    let records: Vec<TruthRecord> = truth.iter().map(TruthRecord::from).collect();
    serde_json::to_writer_pretty(out, &records).map_err(io::Error::other)
}

/// Writes the ground truth as CSV: `scenario,kind,start,end,cause,affected`, times in ms since
/// the epoch, the affected selectors separated by `;`.
pub fn write_truth_csv<W: Write>(truth: &[GroundTruth], out: W) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["scenario", "kind", "start", "end", "cause", "affected"])?;
    for g in truth {
        let affected: Vec<String> = g.affected.iter().map(ToString::to_string).collect();
        w.write_record([
            g.scenario.as_str(),
            g.kind.as_str(),
            &g.start.millis().to_string(),
            &g.end.millis().to_string(),
            &g.cause.to_string(),
            &affected.join(";"),
        ])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScenarioKind;
    use portent_core::Timestamp;

    #[test]
    fn csv_quotes_series_and_reads_back() {
        let mut w = CsvWriter::new(Vec::new()).unwrap();
        let l = Labels::new([("__name__", "m"), ("a", "x"), ("b", "y")]).unwrap();
        w.write(&l, Sample::new(Timestamp::from_secs(60), 0.25))
            .unwrap();
        assert_eq!(w.rows(), 1);
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "timestamp,series,value\n60000,\"m{a=\"\"x\"\", b=\"\"y\"\"}\",0.25\n"
        );
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[1], r#"m{a="x", b="y"}"#);
    }

    #[test]
    fn truth_json_and_csv() {
        let g = GroundTruth {
            scenario: "leak".into(),
            kind: ScenarioKind::MemoryLeak,
            start: Timestamp::from_secs(1),
            end: Timestamp::from_secs(2),
            cause: Labels::new([("pod", "p")]).unwrap(),
            affected: vec![
                Labels::new([("__name__", "m"), ("pod", "p")]).unwrap(),
                Labels::new([("pod", "q")]).unwrap(),
            ],
        };
        let mut json = Vec::new();
        write_truth_json(std::slice::from_ref(&g), &mut json).unwrap();
        let back: Vec<TruthRecord> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, vec![TruthRecord::from(&g)]);
        assert_eq!(back[0].kind, ScenarioKind::MemoryLeak);
        assert_eq!(back[0].affected, vec![r#"m{pod="p"}"#, r#"{pod="q"}"#]);
        let mut csv_out = Vec::new();
        write_truth_csv(&[g], &mut csv_out).unwrap();
        let text = String::from_utf8(csv_out).unwrap();
        assert!(
            text.starts_with("scenario,kind,start,end,cause,affected\nleak,memory_leak,1000,2000,"),
            "{text}"
        );
    }
}
