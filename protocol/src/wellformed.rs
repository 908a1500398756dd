//! A bounded structural check of CBOR bytes, run before serde_cbor sees them.
//!
//! serde_cbor trusts declared lengths when it allocates and recurses up to 128 levels on the
//! call stack. This scan walks the item tree iteratively with an explicit depth counter and
//! checks, without allocating in proportion to anything the peer declared, that:
//! - the input is exactly one well-formed data item (no trailing bytes, nothing cut short);
//! - nesting stays within the configured depth;
//! - every declared length fits in the bytes that remain (a declared 2^64 fails here);
//! - only the subset vouchnet uses appears: unsigned and negative integers, byte and text
//!   strings of definite length, arrays, maps, and the simple values false, true and null.
//!   Tags, floats, undefined and indefinite-length items are refused.

use crate::codec::DecodeError;

/// Checks `bytes` as described in the module docs.
pub(crate) fn check(bytes: &[u8], max_depth: usize) -> Result<(), DecodeError> {
    let mut pos = 0usize;
    // Each entry is the number of items still expected at that nesting level.
    let mut pending: Vec<u64> = Vec::with_capacity(max_depth.min(64) + 1);
    pending.push(1);
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let (major, arg) = read_head(bytes, &mut pos)?;
        let remaining = (bytes.len() - pos) as u64;
        match major {
            0 | 1 => {}
            2 | 3 => {
                if arg > remaining {
                    return Err(DecodeError::Truncated);
                }
                let len = arg as usize;
                if major == 3 && core::str::from_utf8(&bytes[pos..pos + len]).is_err() {
                    return Err(DecodeError::InvalidUtf8);
                }
                pos += len;
            }
            4 | 5 => {
                // Every element takes at least one byte, so a count above the remaining bytes
                // cannot be honest; maps hold two items per entry.
                let items = if major == 5 {
                    arg.checked_mul(2).ok_or(DecodeError::Truncated)?
                } else {
                    arg
                };
                if items > remaining {
                    return Err(DecodeError::Truncated);
                }
                if pending.len() > max_depth {
                    return Err(DecodeError::TooDeep { max: max_depth });
                }
                pending.push(items);
            }
            7 => match arg {
                20..=22 => {}
                _ => return Err(DecodeError::UnsupportedItem { major, info: arg }),
            },
            _ => return Err(DecodeError::UnsupportedItem { major, info: arg }),
        }
    }
    if pos != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - pos,
        });
    }
    Ok(())
}

/// Reads one item head, returning its major type and argument.
fn read_head(bytes: &[u8], pos: &mut usize) -> Result<(u8, u64), DecodeError> {
    let first = *bytes.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    let major = first >> 5;
    let info = first & 0x1f;
    let arg = match info {
        0..=23 => u64::from(info),
        24..=27 => {
            let n = 1usize << (info - 24);
            let end = pos.checked_add(n).ok_or(DecodeError::Truncated)?;
            let slice = bytes.get(*pos..end).ok_or(DecodeError::Truncated)?;
            *pos = end;
            slice.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }
        _ => {
            // 28..=30 are reserved, 31 is indefinite length (or "break").
            return Err(DecodeError::UnsupportedItem {
                major,
                info: u64::from(info),
            });
        }
    };
    if major == 7 && info >= 24 {
        // Floats and extended simple values.
        return Err(DecodeError::UnsupportedItem {
            major,
            info: u64::from(info),
        });
    }
    Ok((major, arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_within_limit() {
        // [[[1]]]
        assert_eq!(check(&[0x81, 0x81, 0x81, 0x01], 3), Ok(()));
    }

    #[test]
    fn refuses_nesting_beyond_limit() {
        let mut deep = vec![0x81u8; 10_000];
        deep.push(0x01);
        assert_eq!(check(&deep, 32), Err(DecodeError::TooDeep { max: 32 }));
    }

    #[test]
    fn refuses_huge_declared_lengths() {
        // byte string of length 2^64-1
        let b = [0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(check(&b, 8), Err(DecodeError::Truncated));
        // array of 2^64-1 items
        let a = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(check(&a, 8), Err(DecodeError::Truncated));
        // map of 2^63 entries overflows the item count
        let m = [0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(check(&m, 8), Err(DecodeError::Truncated));
    }

    #[test]
    fn refuses_trailing_bytes_and_empty_input() {
        assert_eq!(
            check(&[0x01, 0x02], 8),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        assert_eq!(check(&[], 8), Err(DecodeError::Truncated));
    }

    #[test]
    fn refuses_tags_floats_and_indefinite_items() {
        assert!(matches!(
            check(&[0xc1, 0x01], 8),
            Err(DecodeError::UnsupportedItem { major: 6, .. })
        ));
        assert!(matches!(
            check(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0], 8),
            Err(DecodeError::UnsupportedItem { major: 7, .. })
        ));
        assert!(matches!(
            check(&[0x9f, 0xff], 8),
            Err(DecodeError::UnsupportedItem { major: 4, info: 31 })
        ));
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert_eq!(check(&[0x62, 0xc3, 0x28], 8), Err(DecodeError::InvalidUtf8));
    }
}
