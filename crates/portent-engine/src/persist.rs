//! Crash-safe snapshots of the [`Store`] under the storage directory.
//!
//! # Why a snapshot file, not redb
//!
//! Every score tick changes every scored series' detector, so between two saves nearly the whole
//! state is dirty: an embedded B-tree store (redb) would rewrite every value anyway, with page
//! and copy-on-write overhead on top, a second on-disk layout to reason about, and a dependency
//! to build. A snapshot is one sequential write, atomic by `rename`, and readable with no more
//! than this module. The cost is that a crash loses the changes since the last save, which only
//! means rescoring those samples from the source: the scheduler reads from each series' last
//! scored time on the first tick after a restart.
//!
//! # Format (version 4)
//!
//! ```text
//! magic  "PORTENT\0"        8 bytes
//! version                   u32 LE
//! records, each:            u32 LE length (1..=1 MiB), then that many bytes of postcard:
//!   Group  { model, query }       the series that follow belong to this (model, query)
//!   Series { labels, entry }      labels, detector state, last scored/seen, latest verdict
//!   Pool   { model, labels, pool } a multivariate model's pool and its fitted model
//! end                       u32 LE 0
//! series count              u64 LE
//! checksum                  u32 LE: CRC-32 (IEEE) of every byte before it
//! ```
//!
//! postcard is compact (a fitted detector is a few hundred bytes to 1.5 KiB) and already the
//! state format of the models. A save writes `state.bin.tmp`, syncs it, renames it over
//! `state.bin` and syncs the directory: a crash at any point leaves either the old snapshot or
//! the new one, never a mix. A load reads and checks everything before it returns: a truncated,
//! corrupt or foreign file is refused with an error naming the file and what is wrong, never a
//! panic and never a partial store.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use portent_core::Labels;
use serde::{Deserialize, Serialize};

use crate::joint::Pool;
use crate::store::{Entry, Store};

/// The snapshot's file name in the storage directory.
pub const STATE_FILE: &str = "state.bin";
/// The file a save writes before renaming it to [`STATE_FILE`].
pub const TEMP_FILE: &str = "state.bin.tmp";
const MAGIC: &[u8; 8] = b"PORTENT\0";
/// Version 4: detectors carry the untrimmed range and the range as seen; version 3 added the
/// seasonal shift statistic, version 2 the volatility statistic.
const VERSION: u32 = 4;
/// No record comes near this: it bounds what a corrupt length can make a load allocate. The
/// largest are pools: a default Isolation Forest is up to 100 trees of 511 nodes of 40 bytes,
/// about 2 MiB.
const MAX_RECORD: u32 = 1 << 24;

/// Saving or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file system refused.
    #[error("state {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file is not a portent state file.
    #[error("state {path}: not a portent state file")]
    NotState {
        /// The file.
        path: PathBuf,
    },
    /// Written by another version of portent.
    #[error("state {path}: format version {found}, this portent reads version {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it says it is.
        found: u32,
    },
    /// The file ends early: a save that did not finish.
    #[error("state {path}: truncated (a save that did not finish?)")]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// The file is damaged.
    #[error("state {path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A series could not be encoded (not expected: every state type serialises).
    #[error("state {path}: encoding: {reason}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a save wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveStats {
    /// The snapshot written.
    pub path: PathBuf,
    /// Series saved.
    pub series: u64,
    /// Bytes written.
    pub bytes: u64,
}

#[derive(Serialize)]
enum RecordRef<'a> {
    Group {
        model: &'a str,
        query: &'a str,
    },
    Series {
        labels: &'a Labels,
        entry: &'a Entry,
    },
    Pool {
        model: &'a str,
        labels: &'a Labels,
        pool: &'a Pool,
    },
}

/// Same layout as [`RecordRef`]: postcard writes the variant index, then the fields in order.
#[derive(Deserialize)]
enum Record {
    Group {
        model: String,
        query: String,
    },
    Series {
        labels: Labels,
        entry: Box<Entry>,
    },
    Pool {
        model: String,
        labels: Labels,
        pool: Box<Pool>,
    },
}

/// Writes every series of `store` to `dir`/[`STATE_FILE`], atomically (see the module docs).
pub fn save(store: &Store, dir: &Path) -> Result<SaveStats, PersistError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| PersistError::Io { path, error }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(TEMP_FILE);
    let path = dir.join(STATE_FILE);
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut w = Checked {
        inner: BufWriter::with_capacity(1 << 16, file),
        crc: Crc32::new(),
        bytes: 0,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut series = 0u64;
    let mut write_record = |w: &mut Checked<_>, r: &RecordRef<'_>| -> Result<(), PersistError> {
        buf.clear();
        buf =
            postcard::to_extend(r, std::mem::take(&mut buf)).map_err(|e| PersistError::Encode {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
        let len = u32::try_from(buf.len())
            .ok()
            .filter(|&n| n <= MAX_RECORD)
            .ok_or_else(|| PersistError::Encode {
                path: tmp.clone(),
                reason: format!("a record of {} bytes", buf.len()),
            })?;
        w.write_all(&len.to_le_bytes()).map_err(io(&tmp))?;
        w.write_all(&buf).map_err(io(&tmp))
    };
    w.write_all(MAGIC).map_err(io(&tmp))?;
    w.write_all(&VERSION.to_le_bytes()).map_err(io(&tmp))?;
    for g in store.groups() {
        write_record(
            &mut w,
            &RecordRef::Group {
                model: g.model(),
                query: g.query(),
            },
        )?;
        for (labels, entry) in g.iter() {
            write_record(&mut w, &RecordRef::Series { labels, entry })?;
            series += 1;
        }
    }
    for (model, pools) in store.all_pools() {
        for (labels, pool) in pools {
            write_record(
                &mut w,
                &RecordRef::Pool {
                    model,
                    labels,
                    pool,
                },
            )?;
        }
    }
    w.write_all(&0u32.to_le_bytes()).map_err(io(&tmp))?;
    w.write_all(&series.to_le_bytes()).map_err(io(&tmp))?;
    let crc = w.crc.finish();
    let bytes = w.bytes + 4;
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io(&tmp))?;
    let file = inner.into_inner().map_err(|e| PersistError::Io {
        path: tmp.clone(),
        error: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    // The rename is durable only once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(SaveStats {
        path,
        series,
        bytes,
    })
}

/// Loads `dir`/[`STATE_FILE`]; `Ok(None)` if there is none (a first start).
pub fn load(dir: &Path) -> Result<Option<Store>, PersistError> {
    let path = dir.join(STATE_FILE);
    match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(PersistError::Io { path, error }),
        Ok(file) => read(file, &path).map(Some),
    }
}

/// Loads the snapshot at `path`, whatever its name.
pub fn load_file(path: &Path) -> Result<Store, PersistError> {
    let file = File::open(path).map_err(|error| PersistError::Io {
        path: path.to_owned(),
        error,
    })?;
    read(file, path)
}

fn read(file: File, path: &Path) -> Result<Store, PersistError> {
    let mut r = Checked {
        inner: BufReader::with_capacity(1 << 16, file),
        crc: Crc32::new(),
        bytes: 0,
    };
    let fail = |error: io::Error| {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            PersistError::Truncated {
                path: path.to_owned(),
            }
        } else {
            PersistError::Io {
                path: path.to_owned(),
                error,
            }
        }
    };
    let corrupt = |reason: String| PersistError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| match fail(e) {
        PersistError::Truncated { .. } => PersistError::NotState {
            path: path.to_owned(),
        },
        other => other,
    })?;
    if &magic != MAGIC {
        return Err(PersistError::NotState {
            path: path.to_owned(),
        });
    }
    let version = u32::from_le_bytes(read_array(&mut r).map_err(fail)?);
    if version != VERSION {
        return Err(PersistError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let mut store = Store::new();
    let mut group = None;
    let mut series = 0u64;
    let mut buf = Vec::new();
    loop {
        let offset = r.bytes;
        let len = u32::from_le_bytes(read_array(&mut r).map_err(fail)?);
        if len == 0 {
            break;
        }
        if len > MAX_RECORD {
            return Err(corrupt(format!(
                "record at byte {offset} claims {len} bytes"
            )));
        }
        buf.resize(len as usize, 0);
        r.read_exact(&mut buf).map_err(fail)?;
        match postcard::from_bytes::<Record>(&buf) {
            Err(e) => return Err(corrupt(format!("record at byte {offset}: {e}"))),
            Ok(Record::Group { model, query }) => group = Some(store.group_id(&model, &query)),
            Ok(Record::Series { labels, entry }) => {
                let g = group
                    .ok_or_else(|| corrupt(format!("series at byte {offset} before any group")))?;
                store.group_mut(g).insert_unordered(labels, *entry);
                series += 1;
            }
            Ok(Record::Pool {
                model,
                labels,
                pool,
            }) => {
                store.pools_mut(&model).insert(labels, *pool);
            }
        }
    }
    let count = u64::from_le_bytes(read_array(&mut r).map_err(fail)?);
    let expected = r.crc.finish();
    let crc = u32::from_le_bytes(read_array(&mut r.inner).map_err(fail)?);
    if crc != expected {
        return Err(corrupt(format!(
            "checksum {crc:#010x}, contents give {expected:#010x}"
        )));
    }
    if count != series {
        return Err(corrupt(format!(
            "{series} series, the trailer says {count}"
        )));
    }
    if r.inner.read(&mut [0u8; 1]).map_err(fail)? != 0 {
        return Err(corrupt("bytes after the checksum".into()));
    }
    store.sort_by_bucket();
    Ok(store)
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut a = [0u8; N];
    r.read_exact(&mut a)?;
    Ok(a)
}

/// A reader or writer that checksums and counts what passes through it.
struct Checked<T> {
    inner: T,
    crc: Crc32,
    bytes: u64,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.crc.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.crc.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// CRC-32 (IEEE 802.3, as zlib and gzip), table-driven: a dozen lines rather than a dependency.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Self(0xffff_ffff)
    }

    fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u32 {
        self.0 ^ 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::{Detect, Fit, Sample, Timestamp};
    use portent_models::DetectorConfig;

    fn store(n: usize) -> Store {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        for i in 0..300 {
            d.observe(Sample::new(Timestamp::from_secs(i * 60), (i % 7) as f64));
        }
        let mut s = Store::new();
        let g = s.group_id("m", "q");
        for i in 0..n {
            let labels = Labels::new([("pod", format!("p{i}"))]).unwrap();
            let mut e = Entry::new(d.clone(), Timestamp::from_secs(i as i64));
            e.last_scored = Some(Timestamp::from_secs(17_940));
            s.group_mut(g).insert(labels, e);
        }
        s.group_id("other", "q");
        s
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xcbf4_3926);
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let s = store(50);
        let stats = save(&s, dir.path()).unwrap();
        assert_eq!(stats.series, 50);
        assert_eq!(stats.bytes, fs::metadata(&stats.path).unwrap().len());
        assert!(!dir.path().join(TEMP_FILE).exists());
        assert_eq!(load(dir.path()).unwrap().unwrap(), s);
        // Saving again replaces the snapshot.
        save(&Store::new(), dir.path()).unwrap();
        assert!(load(dir.path()).unwrap().unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stats = save(&store(3), dir.path()).unwrap();
        let good = fs::read(&stats.path).unwrap();
        let bad = dir.path().join("bad");
        for len in 0..good.len() {
            fs::write(&bad, &good[..len]).unwrap();
            let err = load_file(&bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    PersistError::Truncated { .. }
                        | PersistError::NotState { .. }
                        | PersistError::Corrupt { .. }
                ),
                "{len}: {err}"
            );
        }
        for i in (0..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0x5a;
            fs::write(&bad, &b).unwrap();
            assert!(load_file(&bad).is_err(), "flipped byte {i} accepted");
        }
        let mut extra = good.clone();
        extra.push(0);
        fs::write(&bad, &extra).unwrap();
        assert!(
            load_file(&bad)
                .unwrap_err()
                .to_string()
                .ends_with("corrupt: bytes after the checksum")
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let stats = save(&store(2), dir.path()).unwrap();
        let good = fs::read(&stats.path).unwrap();
        let bad = dir.path().join("bad");
        fs::write(&bad, b"# HELP not a state file\n").unwrap();
        assert_eq!(
            load_file(&bad).unwrap_err().to_string(),
            format!("state {}: not a portent state file", bad.display())
        );
        let mut other = good.clone();
        other[8] = 1;
        fs::write(&bad, &other).unwrap();
        assert!(
            load_file(&bad)
                .unwrap_err()
                .to_string()
                .ends_with("format version 1, this portent reads version 4")
        );
        fs::write(&bad, &good[..good.len() - 10]).unwrap();
        assert!(
            load_file(&bad)
                .unwrap_err()
                .to_string()
                .ends_with("truncated (a save that did not finish?)")
        );
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&bad, &huge).unwrap();
        assert!(
            load_file(&bad)
                .unwrap_err()
                .to_string()
                .ends_with("corrupt: record at byte 12 claims 4294967295 bytes")
        );
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(&bad, &flipped).unwrap();
        assert!(
            load_file(&bad)
                .unwrap_err()
                .to_string()
                .contains("corrupt: checksum")
        );
    }
}
