//! The on-disk record: `[len: u32][crc32: u32][seq: u64][payload: len bytes]`, little-endian.
//! The checksum covers the sequence number and the payload, so a torn or stale record never
//! passes for the next one: recovery stops at the first record whose checksum fails or whose
//! sequence number is not the one expected.

use bytes::Bytes;
use thiserror::Error;

use crate::clock::Timestamp;
use crate::journal::{DeliveryStatus, NewDelivery};

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 16;

/// What one record says.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// A new delivery; its delivery id is the record's sequence number.
    Delivery(NewDelivery),
    /// A delivery whose dedup key was already stored, with a different body: kept so that an
    /// operator can see what the provider changed.
    Conflict(Conflict),
}

/// The same key arrived with another body.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The stored delivery the key belongs to.
    pub delivery_id: i64,
    pub received_at: Timestamp,
    pub headers_json: String,
    pub body: Bytes,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record payload is malformed: {0}")]
    Malformed(&'static str),
}

const KIND_DELIVERY: u8 = 1;
const KIND_CONFLICT: u8 = 2;

pub use crate::journal::body_fingerprint;

/// Appends the encoded record to `out`.
pub fn encode(seq: u64, record: &LogRecord, out: &mut Vec<u8>) {
    match record {
        LogRecord::Delivery(delivery) => encode_delivery(seq, delivery, out),
        LogRecord::Conflict(conflict) => encode_conflict(seq, conflict, out),
    }
}

/// Appends a delivery record to `out` (the ack path encodes without copying the delivery).
pub fn encode_delivery(seq: u64, delivery: &NewDelivery, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(KIND_DELIVERY);
    put_str(out, &delivery.source);
    put_opt_str(out, delivery.event_id.as_deref());
    put_str(out, &delivery.event_type);
    put_str(out, &delivery.dedup_key);
    out.extend_from_slice(&delivery.received_at.micros().to_le_bytes());
    out.push(status_code(delivery.status));
    put_opt_str(out, delivery.last_error.as_deref());
    put_str(out, &delivery.headers_json);
    put_bytes(out, &delivery.body);
    seal(seq, start, out);
}

/// Appends a conflict record to `out`.
pub fn encode_conflict(seq: u64, conflict: &Conflict, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(KIND_CONFLICT);
    out.extend_from_slice(&conflict.delivery_id.to_le_bytes());
    out.extend_from_slice(&conflict.received_at.micros().to_le_bytes());
    put_str(out, &conflict.headers_json);
    put_bytes(out, &conflict.body);
    seal(seq, start, out);
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    start
}

/// Fills in the header of the record that starts at `start`: length, checksum, sequence.
fn seal(seq: u64, start: usize, out: &mut [u8]) {
    let payload_len = (out.len() - start - HEADER_BYTES) as u32;
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`: its sequence number, the record and its total
/// length. A zero length (preallocated, never written) reads as `Truncated`.
pub fn decode(bytes: &[u8]) -> Result<(u64, LogRecord, usize), DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().map_err(|_| DecodeError::Truncated)?);
    let crc = u32::from_le_bytes(bytes[4..8].try_into().map_err(|_| DecodeError::Truncated)?);
    let total = HEADER_BYTES + len as usize;
    if len == 0 || bytes.len() < total {
        return Err(DecodeError::Truncated);
    }
    if crc32fast::hash(&bytes[8..total]) != crc {
        return Err(DecodeError::Checksum);
    }
    let seq = u64::from_le_bytes(
        bytes[8..16]
            .try_into()
            .map_err(|_| DecodeError::Truncated)?,
    );
    let mut reader = Reader(&bytes[HEADER_BYTES..total]);
    let record = match reader.u8()? {
        KIND_DELIVERY => LogRecord::Delivery(NewDelivery {
            source: reader.string()?,
            event_id: reader.opt_string()?,
            event_type: reader.string()?,
            dedup_key: reader.string()?,
            received_at: Timestamp(reader.i64()?),
            status: status_from(reader.u8()?)?,
            last_error: reader.opt_string()?,
            headers_json: reader.string()?,
            body: Bytes::copy_from_slice(reader.bytes()?),
        }),
        KIND_CONFLICT => LogRecord::Conflict(Conflict {
            delivery_id: reader.i64()?,
            received_at: Timestamp(reader.i64()?),
            headers_json: reader.string()?,
            body: Bytes::copy_from_slice(reader.bytes()?),
        }),
        _ => return Err(DecodeError::Malformed("unknown record kind")),
    };
    Ok((seq, record, total))
}

fn status_code(status: DeliveryStatus) -> u8 {
    match status {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Processed => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Dead => 3,
        DeliveryStatus::Ignored => 4,
        DeliveryStatus::Verifying => 5,
        DeliveryStatus::Rejected => 6,
    }
}

fn status_from(code: u8) -> Result<DeliveryStatus, DecodeError> {
    Ok(match code {
        0 => DeliveryStatus::Pending,
        1 => DeliveryStatus::Processed,
        2 => DeliveryStatus::Failed,
        3 => DeliveryStatus::Dead,
        4 => DeliveryStatus::Ignored,
        5 => DeliveryStatus::Verifying,
        6 => DeliveryStatus::Rejected,
        _ => return Err(DecodeError::Malformed("unknown status")),
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("field runs past the record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let raw = self.take(8)?;
        Ok(i64::from_le_bytes(
            raw.try_into().map_err(|_| DecodeError::Truncated)?,
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let raw = self.take(4)?;
        let len = u32::from_le_bytes(raw.try_into().map_err(|_| DecodeError::Truncated)?);
        self.take(len as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError::Malformed("not UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(DecodeError::Malformed("bad option tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> NewDelivery {
        NewDelivery {
            source: "cartpanda".into(),
            event_id: Some("evt_1".into()),
            event_type: "sale.approved".into(),
            dedup_key: "event:evt_1".into(),
            received_at: Timestamp(1_700_000_000_123_456),
            headers_json: r#"{"content-type":"application/json"}"#.into(),
            body: Bytes::from_static(b"{\"id\":\"evt_1\"}\x00\xff"),
            status: DeliveryStatus::Pending,
            last_error: None,
        }
    }

    #[test]
    fn a_record_round_trips_with_its_sequence_number() {
        let mut buf = Vec::new();
        let record = LogRecord::Delivery(delivery());
        encode(42, &record, &mut buf);
        let conflict = LogRecord::Conflict(Conflict {
            delivery_id: 42,
            received_at: Timestamp(7),
            headers_json: "{}".into(),
            body: Bytes::from_static(b"other"),
        });
        encode(43, &conflict, &mut buf);
        let (seq, decoded, len) = decode(&buf).expect("first");
        assert_eq!((seq, &decoded), (42, &record));
        let (seq, decoded, rest) = decode(&buf[len..]).expect("second");
        assert_eq!((seq, &decoded), (43, &conflict));
        assert_eq!(len + rest, buf.len());
    }

    #[test]
    fn a_torn_or_flipped_record_is_refused() {
        let mut buf = Vec::new();
        encode(1, &LogRecord::Delivery(delivery()), &mut buf);
        assert_eq!(decode(&buf[..buf.len() - 1]), Err(DecodeError::Truncated));
        for at in [4, 9, HEADER_BYTES + 3, buf.len() - 1] {
            let mut flipped = buf.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_err(), "a flip at byte {at} is caught");
        }
        assert_eq!(
            decode(&[0; 64]),
            Err(DecodeError::Truncated),
            "zeroes end the log"
        );
    }

    #[test]
    fn fingerprints_tell_changed_bodies_apart() {
        assert_eq!(body_fingerprint(b"abc"), body_fingerprint(b"abc"));
        assert_ne!(body_fingerprint(b"abc"), body_fingerprint(b"abd"));
        assert_ne!(body_fingerprint(b""), body_fingerprint(b"\0"));
    }
}
