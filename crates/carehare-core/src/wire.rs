//! Primitive AMQP encoders and decoders shared by methods, tables and
//! content headers.
//!
//! Decoding works on a [`Bytes`] cursor so that long strings and bodies can be
//! handed out as zero-copy slices of the input. Every read checks the
//! remaining length first: nothing is allocated from an untrusted length.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::types::ShortStr;

/// A decoding cursor over one frame payload.
///
/// Consecutive `bit` fields are packed into octets, as the spec requires; any
/// other read discards the remaining bits of the current octet.
#[derive(Debug)]
pub(crate) struct Dec {
    rest: Bytes,
    bits: Option<(u8, u8)>,
}

impl Dec {
    #[inline]
    pub(crate) fn new(payload: Bytes) -> Self {
        Self {
            rest: payload,
            bits: None,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Fails when bytes are left over: a method frame must hold exactly one
    /// method's arguments.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.rest.len()))
        }
    }

    /// Checks that `n` bytes remain, and ends any run of bits (every read
    /// but `bit` starts at an octet boundary).
    #[inline]
    fn need(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bits = None;
        if self.rest.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    // The cursor only advances (no `split_to`, which would touch the
    // buffer's reference count for every field).
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.rest.get_u8())
    }
    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.rest.get_u16())
    }
    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.rest.get_u32())
    }
    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.rest.get_u64())
    }

    #[inline]
    pub(crate) fn bit(&mut self) -> Result<bool, DecodeError> {
        let (octet, index) = match self.bits {
            Some((octet, index)) if index < 8 => (octet, index),
            _ => {
                let octet = self.u8()?;
                (octet, 0)
            }
        };
        self.bits = Some((octet, index + 1));
        Ok(octet & (1 << index) != 0)
    }

    /// Takes `len` bytes as a zero-copy slice, after checking they are there.
    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        self.bits = None;
        if len > self.rest.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(self.rest.split_to(len))
    }

    #[inline]
    pub(crate) fn short_str(&mut self) -> Result<ShortStr, DecodeError> {
        let len = self.u8()?;
        let raw = self.take(usize::from(len))?;
        ShortStr::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)
    }

    pub(crate) fn long_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }
}

/// An encoding cursor appending to a [`BytesMut`], with the same bit packing
/// rule as [`Dec`].
pub(crate) struct Enc<'a> {
    out: &'a mut BytesMut,
    bits: Option<(usize, u8)>,
}

impl<'a> Enc<'a> {
    pub(crate) fn new(out: &'a mut BytesMut) -> Self {
        Self { out, bits: None }
    }

    pub(crate) fn out(&mut self) -> &mut BytesMut {
        self.bits = None;
        self.out
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out().put_u8(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.out().put_u16(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out().put_u32(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out().put_u64(v);
    }

    pub(crate) fn bit(&mut self, v: bool) {
        let (at, index) = match self.bits {
            Some((at, index)) if index < 8 => (at, index),
            _ => {
                self.out.put_u8(0);
                (self.out.len() - 1, 0)
            }
        };
        if v {
            self.out[at] |= 1 << index;
        }
        self.bits = Some((at, index + 1));
    }

    pub(crate) fn short_str(&mut self, v: &ShortStr) {
        // ShortStr guarantees len <= 255.
        self.u8(v.len() as u8);
        self.out().put_slice(v.as_bytes());
    }

    /// Long strings over 4 GiB cannot be framed; callers validate sizes
    /// before encoding, so saturating here only guards against misuse.
    pub(crate) fn long_bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.out().put_slice(&v[..len as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_into_octets_and_reset_on_other_fields() {
        let mut out = BytesMut::new();
        let mut enc = Enc::new(&mut out);
        enc.bit(true);
        enc.bit(false);
        enc.bit(true);
        enc.u8(7);
        enc.bit(true);
        assert_eq!(&out[..], &[0b101, 7, 1]);
        let mut dec = Dec::new(out.freeze());
        assert!(dec.bit().unwrap());
        assert!(!dec.bit().unwrap());
        assert!(dec.bit().unwrap());
        assert_eq!(dec.u8().unwrap(), 7);
        assert!(dec.bit().unwrap());
        dec.finish().unwrap();
    }

    #[test]
    fn nine_bits_take_two_octets() {
        let mut out = BytesMut::new();
        let mut enc = Enc::new(&mut out);
        for i in 0..9 {
            enc.bit(i % 2 == 0);
        }
        assert_eq!(&out[..], &[0b0101_0101, 1]);
    }

    #[test]
    fn truncated_reads_are_errors() {
        let mut dec = Dec::new(Bytes::from_static(&[0, 0, 0, 9, 1]));
        assert_eq!(dec.long_bytes(), Err(DecodeError::Truncated));
        let mut dec = Dec::new(Bytes::from_static(&[1]));
        assert_eq!(dec.u16(), Err(DecodeError::Truncated));
    }
}
