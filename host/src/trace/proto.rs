//! Protobuf's wire format, as much of it as OTLP's spans take: fields
//! written into room whose size was worked out first (record.rs writes a
//! span's fields where they happen, into a buffer its thread reuses), and
//! fields read back (OTLP/JSON is made from the protobuf a span was
//! recorded as), with prost's key and varint readers.

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, encoded_len_varint, WireType};

/// Where fields are written: a vector (a chunk, a request's head), or room
/// at the end of a record whose size was worked out first.
pub trait Out {
    fn byte(&mut self, byte: u8);
    fn slice(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn byte(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Room of a known size at the end of a vector, reserved up front so that
/// no write grows it (a size worked out wrong is a bug: the vector would
/// grow, and a debug build panics).
pub struct Room<'a> {
    bytes: &'a mut Vec<u8>,
    end: usize,
}

impl<'a> Room<'a> {
    #[inline(always)]
    pub fn new(bytes: &'a mut Vec<u8>, n: usize) -> Room<'a> {
        bytes.reserve(n);
        let end = bytes.len() + n;
        Room { bytes, end }
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        debug_assert_eq!(self.bytes.len(), self.end, "room written whole");
    }
}

/// The vector's own writes: the room only checks, in debug builds, that
/// they filled it exactly.
impl Out for Room<'_> {
    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        self.bytes.byte(byte);
    }

    #[inline(always)]
    fn slice(&mut self, bytes: &[u8]) {
        self.bytes.slice(bytes);
    }
}

/// A field's key, for field numbers 1-15 (one byte).
pub const fn key(number: u32, wire: WireType) -> u8 {
    assert!(number >= 1 && number <= 15);
    (number << 3 | wire as u32) as u8
}

/// A field's key for field numbers 16-2047 (two bytes).
pub const fn long_key(number: u32, wire: WireType) -> [u8; 2] {
    assert!(number >= 16 && number <= 2047);
    let value = number << 3 | wire as u32;
    [(value & 0x7f) as u8 | 0x80, (value >> 7) as u8]
}

/// The bytes a length-delimited field with a one-byte key and `len`
/// bytes of content takes.
pub const fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The bytes a varint field with a one-byte key takes.
pub const fn varint_len(value: u64) -> usize {
    1 + encoded_len_varint(value)
}

/// The bytes a 64-bit field with a one-byte key takes.
pub const FIXED64_LEN: usize = 9;

/// A varint: most here (keys' lengths, short texts' lengths, small
/// numbers) take one byte.
#[inline]
pub fn put_raw_varint(out: &mut impl Out, mut value: u64) {
    while value >= 0x80 {
        out.byte(value as u8 | 0x80);
        value >>= 7;
    }
    out.byte(value as u8);
}

/// A length-delimited field's key and length; its content follows.
#[inline]
pub fn put_delimited_head(out: &mut impl Out, key: u8, len: usize) {
    out.byte(key);
    put_raw_varint(out, len as u64);
}

#[inline]
pub fn put_bytes(out: &mut impl Out, key: u8, bytes: &[u8]) {
    put_delimited_head(out, key, bytes.len());
    out.slice(bytes);
}

#[inline]
pub fn put_varint(out: &mut impl Out, key: u8, value: u64) {
    out.byte(key);
    put_raw_varint(out, value);
}

#[inline]
pub fn put_fixed64(out: &mut impl Out, key: u8, value: u64) {
    out.byte(key);
    out.slice(&value.to_le_bytes());
}

/// A field's value as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Delimited(&'a [u8]),
}

/// A message's fields in order, as `(field number, value)`. Messages are
/// ones this process wrote: a malformed one (a bug) ends the fields rather
/// than the process.
pub fn fields(mut bytes: &[u8]) -> impl Iterator<Item = (u32, Field<'_>)> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let (number, wire) = decode_key(&mut bytes).ok()?;
        let field = match wire {
            WireType::Varint => Field::Varint(decode_varint(&mut bytes).ok()?),
            WireType::SixtyFourBit if bytes.len() >= 8 => Field::Fixed64(bytes.get_u64_le()),
            WireType::ThirtyTwoBit if bytes.len() >= 4 => Field::Fixed32(bytes.get_u32_le()),
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
                let (content, rest) = bytes.split_at_checked(len)?;
                bytes = rest;
                Field::Delimited(content)
            }
            _ => return None,
        };
        Some((number, field))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_what_was_written() {
        let mut out = Vec::new();
        put_bytes(&mut out, key(1, WireType::LengthDelimited), &[7; 200]);
        put_varint(&mut out, key(6, WireType::Varint), 300);
        put_fixed64(&mut out, key(7, WireType::SixtyFourBit), u64::MAX - 1);
        out.extend_from_slice(&long_key(16, WireType::ThirtyTwoBit));
        out.slice(&1u32.to_le_bytes());
        assert_eq!(
            out.len(),
            delimited_len(200) + varint_len(300) + FIXED64_LEN + 6
        );
        let read: Vec<_> = fields(&out).collect();
        assert_eq!(
            read,
            [
                (1, Field::Delimited(&[7; 200][..])),
                (6, Field::Varint(300)),
                (7, Field::Fixed64(u64::MAX - 1)),
                (16, Field::Fixed32(1)),
            ]
        );
        // Cut anywhere, the fields end where they can no longer be read.
        for cut in 0..out.len() {
            assert!(fields(&out[..cut]).count() < read.len());
        }
    }
}
