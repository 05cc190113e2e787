//! Decoding the binary `COPY` stream with which [`PostgresStore`](super::PostgresStore)
//! loads the live revocations at start: a million rows through ordinary query results cost
//! most of a second in the driver alone, whereas this reads them straight from the bytes.

use tokengate_core::{Revocation, RevocationKind, Timestamp};
use uuid::Uuid;

use crate::error::{Result, StoreError};

/// Decodes the binary COPY output of `SELECT kind, id, issued_before, exp` into
/// revocations. The server may split the stream anywhere (in practice one message per
/// row), so an incomplete row is kept until the next chunk completes it.
///
/// Format: an 11-byte signature, a 32-bit flags word and a header extension of a 32-bit
/// length; then per row a 16-bit field count and per field a 32-bit length (-1 for NULL)
/// followed by the value in the type's binary form; then a field count of -1. All
/// integers big-endian.
#[derive(Default)]
pub(super) struct CopyDecoder {
    /// Bytes of an incomplete header or row, waiting for the next chunk.
    pending: Vec<u8>,
    header_done: bool,
    trailer_seen: bool,
}

const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl CopyDecoder {
    pub(super) fn feed(&mut self, chunk: &[u8], out: &mut Vec<Revocation>) -> Result<()> {
        if self.pending.is_empty() {
            // The common case: whole rows, parsed straight from the chunk.
            let used = self.parse(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.parse(&pending, out)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Everything has been fed: the stream must have ended exactly after its trailer.
    pub(super) fn finish(&self) -> Result<()> {
        if self.trailer_seen && self.pending.is_empty() {
            Ok(())
        } else {
            Err(copy_corrupt("the data ends in the middle"))
        }
    }

    /// Parse as many complete items from `data` as there are; returns the bytes used.
    fn parse(&mut self, data: &[u8], out: &mut Vec<Revocation>) -> Result<usize> {
        let mut at = 0;
        if !self.header_done {
            let Some(used) = parse_copy_header(data)? else {
                return Ok(0);
            };
            at = used;
            self.header_done = true;
        }
        while at < data.len() {
            if self.trailer_seen {
                return Err(copy_corrupt("data after the trailer"));
            }
            let mut reader = Reader {
                data: &data[at..],
                at: 0,
            };
            match reader.row()? {
                None => break,
                Some(CopyItem::Row(rev)) => out.push(rev),
                Some(CopyItem::Trailer) => self.trailer_seen = true,
            }
            at += reader.at;
        }
        Ok(at)
    }
}

fn copy_corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("revocation COPY data: {what}").into())
}

/// The header's length if `data` holds all of it; `None` if it is still incomplete.
fn parse_copy_header(data: &[u8]) -> Result<Option<usize>> {
    let mut reader = Reader { data, at: 0 };
    let Some(signature) = reader.take(COPY_SIGNATURE.len()) else {
        return Ok(None);
    };
    if signature != COPY_SIGNATURE {
        return Err(copy_corrupt("bad signature"));
    }
    let Some(_flags) = reader.i32() else {
        return Ok(None);
    };
    let Some(extension) = reader.i32() else {
        return Ok(None);
    };
    let extension = usize::try_from(extension).map_err(|_| copy_corrupt("bad header"))?;
    if reader.take(extension).is_none() {
        return Ok(None);
    }
    Ok(Some(reader.at))
}

/// What one item of the COPY stream was.
enum CopyItem {
    Row(Revocation),
    /// The end marker: no row may follow.
    Trailer,
}

/// A cursor over bytes; every read returns `None` when the bytes run out.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    /// One field: `Some(None)` for NULL, `None` when incomplete.
    fn field(&mut self) -> Result<Option<Option<&'a [u8]>>> {
        let Some(len) = self.i32() else {
            return Ok(None);
        };
        if len == -1 {
            return Ok(Some(None));
        }
        let len = usize::try_from(len).map_err(|_| copy_corrupt("bad field length"))?;
        Ok(self.take(len).map(Some))
    }

    /// One row or the trailer; `None` when incomplete.
    fn row(&mut self) -> Result<Option<CopyItem>> {
        let Some(fields) = self.i16() else {
            return Ok(None);
        };
        if fields == -1 {
            return Ok(Some(CopyItem::Trailer));
        }
        if fields != 4 {
            return Err(copy_corrupt("a row without 4 fields"));
        }
        // Field by field, stopping at the first incomplete one: reading on would take
        // the middle of a value for the next length.
        let Some(kind) = self.field()? else {
            return Ok(None);
        };
        let Some(id) = self.field()? else {
            return Ok(None);
        };
        let Some(cutoff) = self.field()? else {
            return Ok(None);
        };
        let Some(exp) = self.field()? else {
            return Ok(None);
        };
        let kind = match kind.ok_or_else(|| copy_corrupt("a NULL kind"))? {
            b"token" => RevocationKind::Token,
            b"session" => RevocationKind::Session,
            b"user" => RevocationKind::User,
            b"issued_before" => RevocationKind::IssuedBefore,
            other => {
                return Err(StoreError::Corrupt(
                    format!(
                        "unknown revocation kind {:?}",
                        String::from_utf8_lossy(other)
                    )
                    .into(),
                ))
            }
        };
        let id = id
            .and_then(|b| Uuid::from_slice(b).ok())
            .ok_or_else(|| copy_corrupt("an id that is not a UUID"))?;
        let int = |b: &[u8]| {
            <[u8; 8]>::try_from(b)
                .map(|b| Timestamp::from_secs(i64::from_be_bytes(b)))
                .map_err(|_| copy_corrupt("a time that is not 8 bytes"))
        };
        let cutoff = cutoff.map(int).transpose()?;
        let exp = int(exp.ok_or_else(|| copy_corrupt("a NULL exp"))?)?;
        Revocation::from_parts(kind, id, cutoff, exp)
            .map(|rev| Some(CopyItem::Row(rev)))
            .map_err(|e| StoreError::Corrupt(e.into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Encode rows the way Postgres's binary COPY does.
    fn copy_bytes(rows: &[(&[u8], Uuid, Option<i64>, i64)]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0_i32.to_be_bytes());
        out.extend_from_slice(&3_i32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for (kind, id, cutoff, exp) in rows {
            out.extend_from_slice(&4_i16.to_be_bytes());
            out.extend_from_slice(&i32::try_from(kind.len()).unwrap().to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(&16_i32.to_be_bytes());
            out.extend_from_slice(id.as_bytes());
            match cutoff {
                Some(c) => {
                    out.extend_from_slice(&8_i32.to_be_bytes());
                    out.extend_from_slice(&c.to_be_bytes());
                }
                None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
            }
            out.extend_from_slice(&8_i32.to_be_bytes());
            out.extend_from_slice(&exp.to_be_bytes());
        }
        out.extend_from_slice(&(-1_i16).to_be_bytes());
        out
    }

    fn decode(chunks: &[&[u8]]) -> Result<Vec<Revocation>> {
        let mut decoder = CopyDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut out)?;
        }
        decoder.finish()?;
        Ok(out)
    }

    fn sample() -> (Vec<u8>, Vec<Revocation>) {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let bytes = copy_bytes(&[
            (b"token", a, None, 100),
            (b"session", b, None, 200),
            (b"user", c, Some(-5), 300),
            (b"issued_before", Uuid::nil(), Some(7), 400),
        ]);
        let want = vec![
            Revocation::Token {
                jti: a,
                exp: Timestamp::from_secs(100),
            },
            Revocation::Session {
                sid: b,
                exp: Timestamp::from_secs(200),
            },
            Revocation::User {
                sub: c,
                issued_before: Timestamp::from_secs(-5),
                exp: Timestamp::from_secs(300),
            },
            Revocation::IssuedBefore {
                issued_before: Timestamp::from_secs(7),
                exp: Timestamp::from_secs(400),
            },
        ];
        (bytes, want)
    }

    #[test]
    fn copy_rows_decode_however_the_stream_is_split() {
        let (bytes, want) = sample();
        assert_eq!(decode(&[&bytes]).unwrap(), want);
        for split in 0..=bytes.len() {
            let (x, y) = bytes.split_at(split);
            assert_eq!(decode(&[x, y]).unwrap(), want, "split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&singles).unwrap(), want);
        assert_eq!(decode(&[&copy_bytes(&[])]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_copy_data_is_corrupt() {
        let (bytes, _) = sample();
        let corrupt = |chunks: &[&[u8]]| matches!(decode(chunks), Err(StoreError::Corrupt(_)));
        assert!(corrupt(&[&bytes[..bytes.len() - 1]]), "truncated");
        assert!(corrupt(&[&[]]), "empty");
        let mut extra = bytes.clone();
        extra.extend_from_slice(&4_i16.to_be_bytes());
        assert!(corrupt(&[&extra]), "data after the trailer");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(corrupt(&[&bad]), "signature");

        let id = Uuid::new_v4();
        assert!(corrupt(&[&copy_bytes(&[(b"bogus", id, None, 1)])]));
        assert!(
            corrupt(&[&copy_bytes(&[(b"user", id, None, 1)])]),
            "no cutoff"
        );
        let mut short_id = copy_bytes(&[(b"token", id, None, 1)]);
        // Claim a 15-byte id: every later length is then misread, never panics.
        let at = COPY_SIGNATURE.len() + 8 + 3 + 2 + 4 + 5;
        short_id[at..at + 4].copy_from_slice(&15_i32.to_be_bytes());
        assert!(corrupt(&[&short_id]));
    }
}
