//! Decoding a remote_write 1.0 body without building a label set per sample.
//!
//! In remote_write 1.0 every series of every request carries its whole label set, and nearly
//! all of them are series the receiver already knows. Decoding with prost and then building a
//! [`Labels`] allocated some twenty strings and vectors per sample, which were most of the push
//! path's cost. This reader walks the protobuf in the decompressed body itself: label sets
//! are packed into one [`PackedLabels`] (as a [`Labels`] packs them, so a known series is
//! found with one hash and one comparison of contiguous bytes), samples into one vector, and
//! [`DecodedWrite::for_each`] hands each series on as a [`LabelsRef`] borrowing that buffer,
//! so a receiver looks known series up without allocating and builds [`Labels`] only for new
//! ones.
//!
//! It accepts what prost accepts for the messages of `prompb` (unknown fields of any wire type
//! skipped, repeated scalar fields last-one-wins, label strings UTF-8) and refuses the rest
//! with [`RemoteWriteError::Protobuf`]; the tests check this against prost on mutated bodies.

use portent_core::{Labels, LabelsRef, PackedLabels, Sample, Series, Timestamp};

use crate::error::RemoteWriteError;

/// A decoded, validated remote_write body: every series' label set is valid, so handing the
/// series on cannot fail half way. See the module docs.
///
/// Reusable: [`DecodedWrite::decode`] replaces the content and keeps the buffers, so a
/// receiver decoding request after request allocates only when a body is larger than any
/// before (fresh buffers of a few hundred KiB per request cost page faults, not just copies).
#[derive(Debug, Default)]
pub struct DecodedWrite {
    /// The decompressed body.
    raw: Vec<u8>,
    parsed: Parsed,
}

#[derive(Debug, Default)]
struct Parsed {
    /// The label sets in canonical form as sent (nearly all).
    sets: PackedLabels,
    samples: Vec<Sample>,
    series: Vec<RawSeries>,
}

#[derive(Debug)]
struct RawSeries {
    labels: SetOf,
    /// Its samples in `Parsed::samples`.
    samples: (usize, usize),
}

/// Where a series' label set is.
#[derive(Debug)]
enum SetOf {
    /// In `Parsed::sets`, at this index: it was sent in canonical form.
    Packed(usize),
    /// Built, as the pairs as sent were not in canonical form (unsorted, or with empty
    /// values): rare, so allocating is fine.
    Built(Labels),
}

impl Parsed {
    fn clear(&mut self) {
        self.sets.clear();
        self.samples.clear();
        self.series.clear();
    }
}

impl DecodedWrite {
    /// Decodes a remote_write 1.0 body into `self`, replacing what it held: see
    /// [`crate::decode_write_request`] for the rules and errors. On error `self` is empty.
    pub fn decode(&mut self, body: &[u8], max_decompressed: usize) -> Result<(), RemoteWriteError> {
        self.parsed.clear();
        self.raw.clear();
        let size =
            snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
        // Offsets into the body are kept as u32, half the bytes of usize; a body that large
        // (4 GiB) is far over any sensible limit anyway.
        let limit = max_decompressed.min(u32::MAX as usize);
        if size > limit {
            return Err(RemoteWriteError::TooLarge { size, limit });
        }
        self.raw.resize(size, 0);
        let result = snap::raw::Decoder::new()
            .decompress(body, &mut self.raw)
            .map_err(|e| RemoteWriteError::Snappy(e.to_string()))
            .and_then(|n| {
                self.raw.truncate(n);
                decode(&self.raw, &mut self.parsed)
            });
        if result.is_err() {
            self.parsed.clear();
        }
        result
    }

    /// Bytes the buffers hold on to (their capacity), for a pool to decide whether to keep
    /// them.
    pub fn retained_bytes(&self) -> usize {
        use std::mem::size_of;
        let p = &self.parsed;
        self.raw.capacity()
            + p.sets.retained_bytes()
            + p.samples.capacity() * size_of::<Sample>()
            + p.series.capacity() * size_of::<RawSeries>()
    }

    /// Series with at least one float sample.
    pub fn len(&self) -> usize {
        self.parsed.series.len()
    }

    /// Whether no series has a float sample.
    pub fn is_empty(&self) -> bool {
        self.parsed.series.is_empty()
    }

    /// Samples over all series.
    pub fn sample_count(&self) -> usize {
        self.parsed.samples.len()
    }

    /// Calls `f` with each series' labels and samples, in request order. The labels borrow
    /// the decoded body: look them up, and call [`LabelsRef::to_labels`] only to keep them.
    pub fn for_each(&self, mut f: impl FnMut(LabelsRef<'_>, &[Sample])) {
        self.for_each_batch(64, |batch| {
            for &(labels, samples) in batch {
                f(labels, samples);
            }
        });
    }

    /// Calls `f` with the series in request order, up to `n` (at least 1) at a time, so that
    /// the receiver can look a batch up at once ([`portent_engine`'s `PushBuffer::ingest_batch`]
    /// overlaps the cache misses of a batch). Labels borrow the decoded body as in
    /// [`Self::for_each`].
    pub fn for_each_batch(&self, n: usize, mut f: impl FnMut(&[(LabelsRef<'_>, &[Sample])])) {
        let p = &self.parsed;
        let mut batch = Vec::with_capacity(n.max(1));
        for chunk in p.series.chunks(n.max(1)) {
            batch.clear();
            for s in chunk {
                let samples = p.samples.get(s.samples.0..s.samples.1).unwrap_or(&[]);
                let labels = match &s.labels {
                    // Pushed and sealed when decoded: always `Some`.
                    SetOf::Packed(i) => p.sets.get(*i),
                    SetOf::Built(labels) => Some(LabelsRef::from(labels)),
                };
                if let Some(labels) = labels {
                    batch.push((labels, samples));
                }
            }
            f(&batch);
        }
    }

    /// The series as owned [`Series`] (allocating every label set).
    pub fn to_series(&self) -> Vec<Series> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|labels, samples| {
            out.push(Series {
                labels: labels.to_labels(),
                samples: samples.to_vec(),
            });
        });
        out
    }
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

/// How deep groups (a deprecated wire type no sender of remote_write uses) may nest while
/// skipped: prost's recursion limit.
const MAX_DEPTH: u32 = 100;

fn bad(what: &str) -> RemoteWriteError {
    RemoteWriteError::Protobuf(what.to_owned())
}

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, RemoteWriteError> {
        // Keys, lengths of label strings and most timestamps' neighbours are one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(bad("buffer underflow in a varint"));
            };
            self.buf = rest;
            // The tenth byte holds one bit of a 64-bit value; more is an overflow.
            if i == 9 && b > 1 {
                return Err(bad("invalid varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(bad("invalid varint"))
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], RemoteWriteError> {
        if n > self.buf.len() {
            return Err(bad("buffer underflow"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    #[inline(always)]
    fn len_delimited(&mut self) -> Result<&'a [u8], RemoteWriteError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The next field's number and wire type, or `None` at the end.
    #[inline(always)]
    fn key(&mut self) -> Result<Option<(u64, u64)>, RemoteWriteError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(bad("invalid key value"));
        }
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(bad("invalid tag value: 0"));
        }
        if wire > FIXED32 {
            return Err(bad("invalid wire type value"));
        }
        Ok(Some((field, wire)))
    }

    /// Skips the value of a field this reader does not use.
    fn skip(&mut self, field: u64, wire: u64, depth: u32) -> Result<(), RemoteWriteError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_DEPTH {
                    return Err(bad("recursion limit reached"));
                }
                loop {
                    match self.key()? {
                        None => return Err(bad("unexpected end of group")),
                        Some((f, END_GROUP)) if f == field => return Ok(()),
                        Some((_, END_GROUP)) => return Err(bad("unexpected end group tag")),
                        Some((f, w)) => self.skip(f, w, depth + 1)?,
                    }
                }
            }
            _ => Err(bad("unexpected end group tag")),
        }
    }

    fn fixed64(&mut self) -> Result<[u8; 8], RemoteWriteError> {
        let b = self.take(8)?;
        let mut out = [0; 8];
        out.copy_from_slice(b);
        Ok(out)
    }
}

fn expect(wire: u64, want: u64) -> Result<(), RemoteWriteError> {
    if wire == want {
        Ok(())
    } else {
        Err(bad("invalid wire type"))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, RemoteWriteError> {
    std::str::from_utf8(bytes).map_err(|_| not_utf8())
}

/// Decodes a decompressed `WriteRequest` into `out` (empty). See
/// [`crate::decode_write_request`] for the rules.
///
/// Label strings are checked to be UTF-8 once for the whole body ([`PackedLabels::seal`])
/// rather than one by one, as prost does; strings not packed (of a set not in canonical
/// form, or replaced by a repeated field) are rare and checked one by one.
fn decode(raw: &[u8], out: &mut Parsed) -> Result<(), RemoteWriteError> {
    let result = decode_into(raw, out);
    let sealed = out.sets.seal().map_err(|_| not_utf8());
    match result {
        // A body that is not protobuf says so first, as when prost decoded it.
        Err(e @ RemoteWriteError::Protobuf(_)) => Err(e),
        result => sealed.and(result),
    }
}

fn not_utf8() -> RemoteWriteError {
    bad("invalid string value: data is not UTF-8 encoded")
}

fn decode_into(raw: &[u8], out: &mut Parsed) -> Result<(), RemoteWriteError> {
    let mut scratch: Vec<(&[u8], &[u8])> = Vec::new();
    let mut r = Reader { buf: raw };
    let mut index = 0;
    // The first invalid label set, reported once the whole body is known to be protobuf: a
    // body that is both says it is not a WriteRequest, as when prost decoded it first.
    let mut invalid = None;
    while let Some((field, wire)) = r.key()? {
        if field != 1 {
            r.skip(field, wire, 0)?;
            continue;
        }
        expect(wire, LEN)?;
        let ts = r.len_delimited()?;
        match time_series(ts, index, out, &mut scratch) {
            Ok(()) => {}
            Err(e @ RemoteWriteError::Protobuf(_)) => return Err(e),
            Err(e) => {
                invalid.get_or_insert(e);
            }
        }
        index += 1;
    }
    invalid.map_or(Ok(()), Err)
}

/// Decodes one `TimeSeries` (the `index`-th of the request) into `out`.
fn time_series<'a>(
    bytes: &'a [u8],
    index: usize,
    out: &mut Parsed,
    scratch: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Result<(), RemoteWriteError> {
    scratch.clear();
    let first_sample = out.samples.len();
    let mut r = Reader { buf: bytes };
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, LEN)?;
                scratch.push(label(r.len_delimited()?)?);
            }
            2 => {
                expect(wire, LEN)?;
                out.samples.push(sample(r.len_delimited()?)?);
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    // Validated in full before anything is kept, as `Labels` would: an invalid set refuses the
    // body, also for a series without float samples (whose set is packed all the same, to
    // be checked as UTF-8 with the others).
    let labels = match out.sets.push(scratch) {
        Some(_) if scratch.is_empty() => return Err(RemoteWriteError::NoLabels { index }),
        Some(set) => SetOf::Packed(set),
        None => {
            let mut pairs = Vec::with_capacity(scratch.len());
            for (name, value) in scratch.iter() {
                pairs.push((utf8(name)?, utf8(value)?));
            }
            let labels =
                Labels::new(pairs).map_err(|error| RemoteWriteError::Labels { index, error })?;
            if labels.is_empty() {
                return Err(RemoteWriteError::NoLabels { index });
            }
            SetOf::Built(labels)
        }
    };
    if out.samples.len() == first_sample {
        return Ok(());
    }
    out.series.push(RawSeries {
        labels,
        samples: (first_sample, out.samples.len()),
    });
    Ok(())
}

/// A label's name and value as bytes, checked to be UTF-8 later (see [`decode`]).
fn label(bytes: &[u8]) -> Result<(&[u8], &[u8]), RemoteWriteError> {
    let (mut name, mut value): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    let mut r = Reader { buf: bytes };
    while let Some((field, wire)) = r.key()? {
        match field {
            // Every occurrence is checked, as prost checks each string it merges: one that a
            // later occurrence replaces is checked here, the last one with the others.
            1 => {
                expect(wire, LEN)?;
                if let Some(before) = name.replace(r.len_delimited()?) {
                    utf8(before)?;
                }
            }
            2 => {
                expect(wire, LEN)?;
                if let Some(before) = value.replace(r.len_delimited()?) {
                    utf8(before)?;
                }
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok((name.unwrap_or_default(), value.unwrap_or_default()))
}

fn sample(bytes: &[u8]) -> Result<Sample, RemoteWriteError> {
    let (mut value, mut timestamp) = (0.0, 0);
    let mut r = Reader { buf: bytes };
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, FIXED64)?;
                value = f64::from_le_bytes(r.fixed64()?);
            }
            2 => {
                expect(wire, VARINT)?;
                // int64 on the wire: the varint's bits, two's complement.
                timestamp = r.varint()? as i64;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(Sample::new(Timestamp::from_millis(timestamp), value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto;
    use portent_core::seeded::uniform;
    use prost::Message;
    use prost::encoding::encode_varint;

    fn decode(raw: &[u8]) -> Result<DecodedWrite, RemoteWriteError> {
        let mut out = Parsed::default();
        super::decode(raw, &mut out)?;
        Ok(DecodedWrite {
            raw: raw.to_vec(),
            parsed: out,
        })
    }

    /// What the decoder did before this reader, with prost: decode the whole message, then
    /// the label rules series by series.
    fn via_prost(raw: &[u8]) -> Result<Vec<Series>, RemoteWriteError> {
        let request = proto::WriteRequest::decode(raw)
            .map_err(|e| RemoteWriteError::Protobuf(e.to_string()))?;
        let mut out = Vec::new();
        for (index, ts) in request.timeseries.into_iter().enumerate() {
            let labels = Labels::new(ts.labels.iter().map(|l| (&l.name, &l.value)))
                .map_err(|error| RemoteWriteError::Labels { index, error })?;
            if labels.is_empty() {
                return Err(RemoteWriteError::NoLabels { index });
            }
            if !ts.samples.is_empty() {
                let samples = ts
                    .samples
                    .iter()
                    .map(|s| Sample::new(Timestamp::from_millis(s.timestamp), s.value))
                    .collect();
                out.push(Series { labels, samples });
            }
        }
        Ok(out)
    }

    /// Same outcome: the same series (values bit for bit), or the same error (any protobuf
    /// error counts as the same: the messages differ).
    fn agree(raw: &[u8]) {
        let ours = decode(raw).map(|w| w.to_series());
        let theirs = via_prost(raw);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len(), "{raw:?}");
                for (x, y) in a.iter().zip(b) {
                    assert_eq!(x.labels, y.labels, "{raw:?}");
                    let bits = |s: &Series| -> Vec<(i64, u64)> {
                        s.samples
                            .iter()
                            .map(|p| (p.t.millis(), p.v.to_bits()))
                            .collect()
                    };
                    assert_eq!(bits(x), bits(y), "{raw:?}");
                }
            }
            (Err(RemoteWriteError::Protobuf(_)), Err(RemoteWriteError::Protobuf(_))) => {}
            _ => assert_eq!(ours, theirs, "{raw:?}"),
        }
    }

    fn field(out: &mut Vec<u8>, number: u64, wire: u64, bytes: &[u8]) {
        encode_varint(number << 3 | wire, out);
        if wire == LEN {
            encode_varint(bytes.len() as u64, out);
        }
        out.extend_from_slice(bytes);
    }

    fn time_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Vec<u8> {
        let mut b = crate::remote_write::tests::ts(labels, samples).encode_to_vec();
        // Fields this reader skips: an exemplar-like message, a varint, fixed32 and fixed64
        // values, and a group.
        field(&mut b, 3, LEN, &[0x0a, 0x00]);
        field(&mut b, 9, VARINT, &[0x96, 0x01]);
        field(&mut b, 10, FIXED32, &[1, 2, 3, 4]);
        field(&mut b, 11, FIXED64, &[1, 2, 3, 4, 5, 6, 7, 8]);
        field(&mut b, 12, START_GROUP, &[0x08, 0x01]);
        encode_varint(12 << 3 | END_GROUP, &mut b);
        b
    }

    /// A body with what senders send and what they may: sorted and unsorted labels, empty
    /// values, a series without samples, special values, unknown fields at every level.
    fn body() -> Vec<u8> {
        let mut b = Vec::new();
        let series = [
            time_series(
                &[("__name__", "up"), ("job", "node")],
                &[(1, 1.0), (2, f64::NAN), (-3, f64::INFINITY)],
            ),
            time_series(&[("z", "1"), ("a", "2"), ("e", "")], &[(5, -0.5)]),
            time_series(&[("__name__", "h")], &[]),
            time_series(
                &[("__name__", "é"), ("b", "x")],
                &[(i64::MAX, 3.0), (0, 0.0)],
            ),
        ];
        for ts in &series {
            field(&mut b, 1, LEN, ts);
        }
        field(&mut b, 3, LEN, b"metadata");
        field(&mut b, 7, VARINT, &[0x01]);
        b
    }

    #[test]
    fn reads_what_prost_reads() {
        let raw = body();
        agree(&raw);
        let got = decode(&raw).unwrap().to_series();
        assert_eq!(got.len(), 3, "the series without samples is dropped");
        assert_eq!(
            got[1].labels,
            Labels::new([("a", "2"), ("z", "1")]).unwrap()
        );
        assert_eq!(got[2].samples[0].t.millis(), i64::MAX);
    }

    /// Label strings are checked to be UTF-8 once per body (see [`decode`]): wherever an
    /// invalid string is (a kept series, a series without samples, one not in canonical form,
    /// an occurrence of a field that a later one replaces), the body is refused as prost
    /// refuses it, and strings with multi-byte characters at their ends still decode.
    #[test]
    fn refuses_label_strings_that_are_not_utf8_wherever_they_are() {
        let label = |name: &[u8], value: &[u8]| {
            let mut l = Vec::new();
            field(&mut l, 1, LEN, name);
            field(&mut l, 2, LEN, value);
            l
        };
        let series = |labels: &[Vec<u8>], samples: bool| {
            let mut t = Vec::new();
            for l in labels {
                field(&mut t, 1, LEN, l);
            }
            if samples {
                let mut s = Vec::new();
                field(&mut s, 1, FIXED64, &1.5f64.to_le_bytes());
                field(&mut s, 2, VARINT, &[0x07]);
                field(&mut t, 2, LEN, &s);
            }
            t
        };
        let body = |all: &[Vec<u8>]| {
            let mut b = Vec::new();
            for t in all {
                field(&mut b, 1, LEN, t);
            }
            b
        };
        let good = series(
            &[label(b"a", "xé".as_bytes()), label(b"b", "é".as_bytes())],
            true,
        );
        let got = decode(&body(std::slice::from_ref(&good)))
            .unwrap()
            .to_series();
        assert_eq!(
            got[0].labels,
            Labels::new([("a", "xé"), ("b", "é")]).unwrap()
        );
        let bad_value = label(b"b", &[b'x', 0xc3]);
        let mut replaced = label(b"b", &[0xff]);
        replaced.extend(label(b"b", b"fine"));
        let cases = [
            series(&[label(b"a", b"1"), bad_value.clone()], true),
            series(&[label(b"a", b"1"), bad_value.clone()], false),
            series(&[bad_value.clone(), label(b"a", b"1")], true),
            series(&[label(b"a", b"1"), replaced], true),
        ];
        for case in cases {
            let raw = body(&[good.clone(), case]);
            agree(&raw);
            assert!(
                matches!(decode(&raw), Err(RemoteWriteError::Protobuf(m)) if m.contains("UTF-8")),
                "{raw:?}"
            );
        }
    }

    /// Whatever the bytes, this reader and prost (plus the label rules) agree: same series, or
    /// both refuse (with the same label error, if it is one). Bodies are a valid one with bits
    /// flipped, bytes inserted, removed or cut, and random bytes.
    #[test]
    fn agrees_with_prost_on_mutated_bodies() {
        let valid = body();
        let byte = |k: u64| (uniform(k) * 256.0) as u8;
        let at = |k: u64, len: usize| (uniform(k) * len as f64) as usize % len.max(1);
        for case in 0..20_000u64 {
            let seed = case * 1_000;
            let mut b = valid.clone();
            let edits = 1 + case % 3;
            for e in 0..edits {
                let s = seed + 10 * e;
                match (case / 3) % 5 {
                    0 => {
                        let i = at(s, b.len());
                        b[i] ^= 1 << (byte(s + 1) % 8);
                    }
                    1 => {
                        let i = at(s, b.len());
                        b.insert(i, byte(s + 1));
                    }
                    2 => {
                        let i = at(s, b.len());
                        b.remove(i);
                    }
                    3 => b.truncate(at(s, b.len())),
                    _ => {
                        b = (0..(byte(s) as u64)).map(|k| byte(s + k + 1)).collect();
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            agree(&b);
        }
    }

    #[test]
    fn label_errors_are_reported_after_protobuf_ones_and_in_order() {
        let mut raw = Vec::new();
        field(&mut raw, 1, LEN, &time_series(&[("a-b", "1")], &[(1, 1.0)]));
        field(&mut raw, 1, LEN, &time_series(&[], &[(1, 1.0)]));
        agree(&raw);
        assert!(matches!(
            decode(&raw),
            Err(RemoteWriteError::Labels { index: 0, .. })
        ));
        // A broken field after an invalid label set: the body is not protobuf, first.
        raw.extend_from_slice(&[0x0a, 0x05, 0x01]);
        agree(&raw);
        assert!(matches!(decode(&raw), Err(RemoteWriteError::Protobuf(_))));
    }

    #[test]
    fn known_series_come_as_borrowed_canonical_pairs() {
        let raw = body();
        let write = decode(&raw).unwrap();
        assert_eq!((write.len(), write.sample_count()), (3, 6));
        let mut seen = Vec::new();
        write.for_each(|labels, samples| {
            // The sorted sets are borrowed pairs; the unsorted one was built when decoded.
            seen.push((labels.to_labels().to_string(), samples.len()));
        });
        assert_eq!(
            seen,
            [
                (r#"up{job="node"}"#.to_owned(), 3),
                (r#"{a="2", z="1"}"#.to_owned(), 1),
                (r#"é{b="x"}"#.to_owned(), 2),
            ]
        );
        // In batches of any size: the same series, in the same order.
        for n in [0, 1, 2, 3, 16] {
            let mut batched = Vec::new();
            write.for_each_batch(n, |batch| {
                assert!(batch.len() <= n.max(1));
                for (labels, samples) in batch {
                    batched.push((labels.to_labels().to_string(), samples.len()));
                }
            });
            assert_eq!(batched, seen, "batches of {n}");
        }
    }
}
