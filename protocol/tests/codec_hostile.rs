//! The encoding part of the hostile-input catalogue (REFERENCES.md §4): every input gets a
//! typed error, nothing panics, nothing allocates in proportion to a declared length.

use vouchnet_protocol::codec::{decode, encode, DecodeError, Limits};
use vouchnet_protocol::ids::TxId;
use vouchnet_protocol::messages::{
    Ack, DisplayName, Frame, Message, PairingRequest, PAIRING_METHOD,
};

fn sample_frame() -> Frame {
    Frame::new(Message::PairingRequest(PairingRequest {
        tx_id: TxId([3; 16]),
        method: PAIRING_METHOD.to_string(),
        commitment: [9; 32],
        name: DisplayName::new("laptop").unwrap(),
    }))
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn empty_frame_is_refused() {
    assert_eq!(Frame::decode(&[], &limits()), Err(DecodeError::Empty));
}

#[test]
fn every_strict_prefix_of_a_valid_frame_is_refused() {
    let bytes = sample_frame().encode();
    for cut in 1..bytes.len() {
        let err = Frame::decode(&bytes[..cut], &limits()).expect_err("prefix must fail");
        assert_eq!(err, DecodeError::Truncated, "prefix of {cut} bytes");
    }
    assert_eq!(Frame::decode(&bytes, &limits()), Ok(sample_frame()));
}

#[test]
fn oversized_frame_is_refused_by_size_before_parsing() {
    let l = limits();
    let big = vec![0u8; l.max_frame + 1];
    assert_eq!(
        Frame::decode(&big, &l),
        Err(DecodeError::TooLarge {
            len: l.max_frame + 1,
            max: l.max_frame
        })
    );
}

#[test]
fn ten_thousand_nested_arrays_are_refused() {
    let mut deep = vec![0x81u8; 10_000];
    deep.push(0x00);
    assert_eq!(
        Frame::decode(&deep, &limits()),
        Err(DecodeError::TooDeep {
            max: limits().max_depth
        })
    );
}

#[test]
fn declared_length_of_2_pow_64_is_refused() {
    let mut b = vec![0xa2, 0x61, b'v', 0x01, 0x63, b'm', b's', b'g'];
    b.extend_from_slice(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(Frame::decode(&b, &limits()), Err(DecodeError::Truncated));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = sample_frame().encode();
    bytes.push(0x00);
    assert_eq!(
        Frame::decode(&bytes, &limits()),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn duplicate_map_keys_are_refused() {
    // {"v": 1, "v": 1, "msg": {"Ack": {}}}
    let mut b = vec![
        0xa3, 0x61, b'v', 0x01, 0x61, b'v', 0x01, 0x63, b'm', b's', b'g',
    ];
    b.extend_from_slice(&[0xa1, 0x63, b'A', b'c', b'k', 0xa0]);
    assert!(
        matches!(Frame::decode(&b, &limits()), Err(DecodeError::Schema(m)) if m.contains("duplicate"))
    );
}

#[test]
fn invalid_utf8_is_refused() {
    // {"v": 1, "msg": <text "\xc3\x28">}
    let b = [
        0xa2, 0x61, b'v', 0x01, 0x63, b'm', b's', b'g', 0x62, 0xc3, 0x28,
    ];
    assert_eq!(Frame::decode(&b, &limits()), Err(DecodeError::InvalidUtf8));
}

#[test]
fn unknown_tags_are_refused() {
    // {"v": tag(1)(1), ...}
    let b = [0xa2, 0x61, b'v', 0xc1, 0x01, 0x63, b'm', b's', b'g', 0xa0];
    assert_eq!(
        Frame::decode(&b, &limits()),
        Err(DecodeError::UnsupportedItem { major: 6, info: 1 })
    );
}

#[test]
fn unknown_message_kind_is_a_schema_error() {
    // {"v": 1, "msg": {"Bogus": {}}}
    let b = [
        0xa2, 0x61, b'v', 0x01, 0x63, b'm', b's', b'g', 0xa1, 0x65, b'B', b'o', b'g', b'u', b's',
        0xa0,
    ];
    assert!(matches!(
        Frame::decode(&b, &limits()),
        Err(DecodeError::Schema(_))
    ));
}

#[test]
fn unknown_version_is_reported_as_such_even_with_an_unknown_message() {
    let b = [
        0xa2, 0x61, b'v', 0x02, 0x63, b'm', b's', b'g', 0xa1, 0x65, b'B', b'o', b'g', b'u', b's',
        0xa0,
    ];
    assert_eq!(
        Frame::decode(&b, &limits()),
        Err(DecodeError::UnsupportedVersion(2))
    );
}

#[test]
fn keys_and_signatures_of_the_wrong_length_are_refused() {
    #[derive(serde::Serialize)]
    struct BadReq {
        tx_id: serde_bytes::ByteBuf,
        method: String,
        commitment: serde_bytes::ByteBuf,
        name: String,
    }
    #[derive(serde::Serialize)]
    enum BadMsg {
        PairingRequest(BadReq),
    }
    #[derive(serde::Serialize)]
    struct BadFrame {
        v: u64,
        msg: BadMsg,
    }
    let bad = BadFrame {
        v: 1,
        msg: BadMsg::PairingRequest(BadReq {
            tx_id: serde_bytes::ByteBuf::from(vec![0u8; 16]),
            method: PAIRING_METHOD.into(),
            commitment: serde_bytes::ByteBuf::from(vec![0u8; 31]),
            name: "x".into(),
        }),
    };
    assert!(matches!(
        Frame::decode(&encode(&bad), &limits()),
        Err(DecodeError::Schema(_))
    ));

    #[derive(serde::Serialize)]
    struct BadSigned {
        body: serde_bytes::ByteBuf,
        sig: serde_bytes::ByteBuf,
    }
    let s = BadSigned {
        body: serde_bytes::ByteBuf::from(vec![0xa0]),
        sig: serde_bytes::ByteBuf::from(vec![0u8; 63]),
    };
    let r: Result<vouchnet_protocol::messages::SignedVouch, _> = decode(&encode(&s), &limits());
    assert!(matches!(r, Err(DecodeError::Schema(m)) if m.contains("64 bytes")));
}

#[test]
fn overlong_display_names_are_refused() {
    let long = "x".repeat(65);
    assert!(DisplayName::new(long.clone()).is_err());
    assert!(DisplayName::new("x".repeat(64)).is_ok());
    assert!(DisplayName::new("bad\u{7}bell").is_err());
}

#[test]
fn ack_round_trips() {
    let f = Frame::new(Message::Ack(Ack {}));
    assert_eq!(Frame::decode(&f.encode(), &limits()), Ok(f));
}
