use super::*;
use rand::rngs::OsRng;

const NAME: &str = "vadyl.example/log";

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: NAME.to_owned(),
        tree_size: 1234,
        root_hash: Sha256::digest(b"root").into(),
        head_hash: Sha256::digest(b"head").into(),
    }
}

fn fixed_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The example from Go's golang.org/x/mod/sumdb/note documentation.
const GO_SIGNER_KEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VERIFIER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
    then you don't know what your problem is.\n\
    \n\
    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn go_signing_key() -> SigningKey {
    // PRIVATE+KEY+<name>+<id>+<base64>; the base64 itself may contain '+'.
    let encoded = GO_SIGNER_KEY.splitn(5, '+').nth(4).unwrap();
    let typed = BASE64.decode(encoded).unwrap();
    assert_eq!(typed[0], ED25519_SIGNATURE_TYPE);
    SigningKey::from_bytes(&typed[1..].try_into().unwrap())
}

#[test]
fn interoperates_with_go_sumdb_note() {
    let key = go_signing_key();
    assert_eq!(verifier_key_string("PeterNeumann", &key.verifying_key()), GO_VERIFIER_KEY);
    assert_eq!(hex::encode(key_id("PeterNeumann", &key.verifying_key())), "c74f20a3");
    // Ed25519 is deterministic, so the note must match byte for byte.
    assert_eq!(sign_text(GO_TEXT, "PeterNeumann", &key), GO_NOTE);

    let (name, verifier) = parse_verifier_key(GO_VERIFIER_KEY).unwrap();
    assert_eq!(name, "PeterNeumann");
    assert_eq!(open_text(GO_NOTE, &name, &verifier), Ok(GO_TEXT));
    // Valid note, but not a checkpoint.
    assert!(matches!(verify_note(GO_NOTE, &name, &verifier), Err(CheckpointError::MalformedBody(_))));
}

/// The example in the module documentation, pinned byte for byte.
#[test]
fn documented_example() {
    const NOTE: &str = "vadyl.example/log\n42\nM8XR+G5CPgDXtwzDX3A5k2bypzNh/SMs86NEpNZ2WUA=\n\
        head 2b5efe1b17ef34287cd751ceafca51a89be92940151d1fc45dab0e901665e3b0\n\n\
        \u{2014} vadyl.example/log b1WNQOSsqU26n6O61QnqLJ1TEaygcXvYfBJ1kIi8E7BIfHau5HtinUXgHaJtjwfHxLKeCOKkA7dMJQ9e2fXG0HI9DwM=\n";
    const VKEY: &str = "vadyl.example/log+6f558d40+AYWTfZ+HGlfzalzRjILb1q1TXQRJkfENPgHvn7JZAzhM";
    let key = SigningKey::from_bytes(&Sha256::digest(b"vadyl doc example key").into());
    let leaves: Vec<Hash32> =
        (0..42u64).map(|i| super::super::merkle::leaf_hash(&Sha256::digest(i.to_be_bytes()).into())).collect();
    let cp = Checkpoint {
        origin: NAME.to_owned(),
        tree_size: 42,
        root_hash: super::super::merkle::root(&leaves),
        head_hash: Sha256::digest(b"event 41").into(),
    };
    assert_eq!(sign_note(&cp, NAME, &key), NOTE);
    assert_eq!(verifier_key_string(NAME, &key.verifying_key()), VKEY);
    let (name, verifier) = parse_verifier_key(VKEY).unwrap();
    assert_eq!(verify_note(NOTE, &name, &verifier), Ok(cp));
}

#[test]
fn body_format() {
    let mut cp = checkpoint();
    cp.root_hash = [0; 32];
    cp.head_hash = [0xab; 32];
    assert_eq!(
        cp.body(),
        format!("vadyl.example/log\n1234\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nhead {}\n", "ab".repeat(32))
    );
    assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp.clone()));
    cp.tree_size = 0;
    assert!(cp.body().contains("\n0\n"));
    assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp.clone()));
    cp.tree_size = u64::MAX;
    assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp));
}

#[test]
fn parse_body_is_strict() {
    let good = checkpoint().body();
    let lines: Vec<&str> = good.lines().collect();
    let with = |i: usize, replacement: &str| {
        let mut l = lines.clone();
        l[i] = replacement;
        format!("{}\n", l.join("\n"))
    };
    let root_b64 = lines[2];
    let head_hex = lines[3].strip_prefix("head ").unwrap();
    let bad = [
        good.trim_end_matches('\n').to_owned(),
        format!("{good}\n"),
        format!("{good}extension\n"),
        format!("\n{good}"),
        good.replace('\n', "\r\n"),
        with(0, ""),
        with(0, "\u{2014} vadyl"),
        with(0, "vadyl\tlog"),
        with(1, ""),
        with(1, "01234"),
        with(1, "+1234"),
        with(1, "-1"),
        with(1, " 1234"),
        with(1, "1234 "),
        with(1, "0x10"),
        with(1, "18446744073709551616"),
        with(2, root_b64.trim_end_matches('=')),
        with(2, &format!("{root_b64}=")),
        with(2, &BASE64.encode([0u8; 31])),
        with(2, &BASE64.encode([0u8; 33])),
        with(2, &base64::engine::general_purpose::URL_SAFE.encode([0xff; 32])),
        with(2, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB="), // non-zero trailing bits
        with(3, &format!("head {}", head_hex.to_uppercase())),
        with(3, &format!("head  {head_hex}")),
        with(3, &format!("Head {head_hex}")),
        with(3, &format!("head {}", &head_hex[2..])),
        with(3, &format!("head {head_hex}00")),
        with(3, head_hex),
    ];
    for body in bad {
        assert!(Checkpoint::parse_body(&body).is_err(), "accepted {body:?}");
    }
    assert_eq!(Checkpoint::parse_body(&good), Ok(checkpoint()));
}

#[test]
fn validate_rejects_unwritable_origins() {
    assert_eq!(checkpoint().validate(), Ok(()));
    for origin in ["", "a\nb", "a\rb", "\u{2014} x"] {
        let cp = Checkpoint { origin: origin.to_owned(), ..checkpoint() };
        assert!(cp.validate().is_err(), "{origin:?}");
        // And signing it anyway yields a note that does not verify.
        let key = fixed_key();
        assert!(verify_note(&sign_note(&cp, NAME, &key), NAME, &key.verifying_key()).is_err());
    }
}

#[test]
fn sign_verify_round_trip() {
    let key = SigningKey::generate(&mut OsRng);
    let cp = checkpoint();
    let note = sign_note(&cp, NAME, &key);
    assert!(note.starts_with(&cp.body()));
    assert!(note.ends_with('\n'));
    let signature_line = note.strip_prefix(&format!("{}\n", cp.body())).unwrap();
    assert!(signature_line.starts_with("\u{2014} vadyl.example/log "));
    assert_eq!(signature_line.lines().count(), 1);
    assert_eq!(verify_note(&note, NAME, &key.verifying_key()), Ok(cp));
}

#[test]
fn other_keys_and_names_fail() {
    let key = fixed_key();
    let other = SigningKey::generate(&mut OsRng);
    let cp = checkpoint();
    let note = sign_note(&cp, NAME, &key);
    assert!(matches!(verify_note(&note, NAME, &other.verifying_key()), Err(CheckpointError::NoKnownSignature { .. })));
    assert!(matches!(
        verify_note(&note, "other.example/log", &key.verifying_key()),
        Err(CheckpointError::NoKnownSignature { .. })
    ));
    assert_eq!(verify_note(&note, "bad name", &key.verifying_key()), Err(CheckpointError::InvalidKeyName));

    // Signed by another key under our name: different key id, so ignored, so no known signature.
    let forged = sign_note(&cp, NAME, &other);
    assert!(matches!(verify_note(&forged, NAME, &key.verifying_key()), Err(CheckpointError::NoKnownSignature { .. })));
}

/// Appends the signature lines of `extra` (a note over the same text) to `note`.
fn cosign(note: &str, extra: &str) -> String {
    let split = extra.rfind("\n\n").unwrap();
    format!("{note}{}", &extra[split + 2..])
}

#[test]
fn unknown_signatures_are_ignored_but_bad_known_ones_are_not() {
    let key = fixed_key();
    let witness = SigningKey::generate(&mut OsRng);
    let cp = checkpoint();
    let ours = sign_note(&cp, NAME, &key);
    let theirs = sign_note(&cp, "witness.example", &witness);

    // A witness cosignature before or after ours is fine.
    assert_eq!(verify_note(&cosign(&ours, &theirs), NAME, &key.verifying_key()), Ok(cp.clone()));
    assert_eq!(verify_note(&cosign(&theirs, &ours), NAME, &key.verifying_key()), Ok(cp.clone()));
    // Only unknown signatures: rejected.
    assert!(matches!(verify_note(&theirs, NAME, &key.verifying_key()), Err(CheckpointError::NoKnownSignature { .. })));
    // A signature from our key over different text poisons the note even
    // if a valid one is also present.
    let other_cp = Checkpoint { tree_size: cp.tree_size + 1, ..cp.clone() };
    let bad = sign_note(&other_cp, NAME, &key);
    assert_eq!(
        verify_note(&cosign(&ours, &bad), NAME, &key.verifying_key()),
        Err(CheckpointError::InvalidSignature { key_name: NAME.to_owned() })
    );
    // Too many signature lines.
    let mut crowded = ours.clone();
    for _ in 0..MAX_SIGNATURES {
        crowded = cosign(&crowded, &theirs);
    }
    assert_eq!(
        verify_note(&crowded, NAME, &key.verifying_key()),
        Err(CheckpointError::TooManySignatures { max: MAX_SIGNATURES })
    );
    let mut full = ours.clone();
    for _ in 1..MAX_SIGNATURES {
        full = cosign(&full, &theirs);
    }
    assert_eq!(verify_note(&full, NAME, &key.verifying_key()), Ok(cp));
}

#[test]
fn malformed_notes_are_rejected() {
    let key = fixed_key();
    let vk = key.verifying_key();
    let note = sign_note(&checkpoint(), NAME, &key);
    let body = checkpoint().body();
    let sig_line = note.strip_prefix(&format!("{body}\n")).unwrap();
    let bad = [
        String::new(),
        body.clone(),
        format!("{body}\n"),
        note.trim_end_matches('\n').to_owned(),
        format!("{note}\n"),
        format!("{body}{sig_line}"),
        format!("{body}\n\n{sig_line}"),
        note.replace('\n', "\r\n"),
        note.replacen("\u{2014} ", "-- ", 1),
        note.replacen("\u{2014} ", "\u{2014}", 1),
        note.replacen("\u{2014} ", "\u{2013} ", 1),
        format!("{body}\n{}", sig_line.replacen(' ', "  ", 2)),
        format!("{body}\n{}", sig_line.replace('\n', " \n")),
        format!("{body}\n{}", sig_line.replace('=', "")),
        format!("{body}\n{}", sig_line.replace('\n', "\t\n")),
        format!("{body}\n\u{2014} {NAME} AAAA\n{sig_line}"),
        format!("{body}\u{2014} {NAME} x\n\n{sig_line}"),
        format!("\u{2014} {body}\n{sig_line}"),
    ];
    for text in bad {
        assert!(verify_note(&text, NAME, &vk).is_err(), "accepted {text:?}");
    }

    let padding = "x".repeat(MAX_NOTE_BYTES);
    let huge = format!("{padding}\n{note}");
    assert_eq!(
        verify_note(&huge, NAME, &vk),
        Err(CheckpointError::NoteTooLarge { size: huge.len(), max: MAX_NOTE_BYTES })
    );
    assert_eq!(verify_note(&note, NAME, &vk), Ok(checkpoint()));
}

/// Replaces byte `position` of `note` with each of `replacements` (skipping
/// no-op and non-UTF-8 results) and asserts that the original checkpoint
/// never comes back verified. Returns how many mutated notes were checked.
fn assert_mutations_detected(note: &str, position: usize, replacements: impl Iterator<Item = u8>) -> usize {
    let key = fixed_key().verifying_key();
    let original = checkpoint();
    let mut tried = 0;
    for replacement in replacements {
        let mut mutated = note.as_bytes().to_vec();
        if mutated[position] == replacement {
            continue;
        }
        mutated[position] = replacement;
        // Replacing part of the em dash breaks UTF-8, which a &str cannot carry.
        let Ok(mutated) = String::from_utf8(mutated) else { continue };
        tried += 1;
        if let Ok(cp) = verify_note(&mutated, NAME, &key) {
            assert_ne!(cp, original, "byte {position} -> {replacement:#04x} still verified: {mutated:?}");
        }
    }
    tried
}

fn signed_checkpoint() -> String {
    let note = sign_note(&checkpoint(), NAME, &fixed_key());
    assert_eq!(verify_note(&note, NAME, &fixed_key().verifying_key()), Ok(checkpoint()));
    note
}

/// Each verification whose signature check runs costs ~10 ms in an
/// unoptimised build, so this test changes every byte once, cycling
/// through replacements that matter to the format (newline, space, '+',
/// '/', '=', digits, letters, a control character). The exhaustive
/// variant below tries every ASCII byte at every position.
#[test]
fn every_single_byte_change_is_detected() {
    const REPLACEMENTS: &[u8] = b"\n +/=0Aa-\t9zZ";
    let note = signed_checkpoint();
    let mut tried = 0;
    for position in 0..note.len() {
        let rotated = REPLACEMENTS.iter().cycle().skip(position % REPLACEMENTS.len()).take(REPLACEMENTS.len());
        // The first replacement that changes the byte.
        let byte = note.as_bytes()[position];
        let replacement = rotated.copied().find(|&r| r != byte);
        tried += assert_mutations_detected(&note, position, replacement.into_iter());
    }
    assert!(tried + 3 >= note.len(), "only {tried} of {} positions mutated", note.len());

    // Truncation at any point fails too.
    let key = fixed_key().verifying_key();
    for end in 0..note.len() {
        if let Some(prefix) = note.get(..end) {
            assert!(verify_note(prefix, NAME, &key).is_err(), "prefix of {end} bytes verified");
        }
    }
}

/// Every alternative spelling of the signature's last base64 character
/// carries the same leading bits with different unused trailing bits; only
/// the canonical one may decode.
#[test]
fn non_canonical_signature_base64_is_rejected() {
    let note = signed_checkpoint();
    let last_char = note.len() - 3; // Before "=\n".
    assert_eq!(&note[last_char + 1..], "=\n");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(assert_mutations_detected(&note, last_char, alphabet.iter().copied()), 63);
}

/// Every ASCII byte at every position: ~30 000 verifications. Run with
/// `cargo test --release -- --ignored` (about a second there; minutes unoptimised).
#[test]
#[ignore = "slow without optimisations; run with --release -- --ignored"]
fn every_single_byte_change_to_every_ascii_byte_is_detected() {
    let note = signed_checkpoint();
    let tried: usize = (0..note.len()).map(|position| assert_mutations_detected(&note, position, 0..0x80)).sum();
    assert!(tried >= (note.len() - 3) * 127, "only {tried} mutations tried");
}

#[test]
fn verifier_key_round_trip() {
    let key = fixed_key().verifying_key();
    let vkey = verifier_key_string(NAME, &key);
    assert!(vkey.starts_with("vadyl.example/log+"));
    assert_eq!(parse_verifier_key(&vkey), Ok((NAME.to_owned(), key)));

    for _ in 0..8 {
        let key = SigningKey::generate(&mut OsRng).verifying_key();
        assert_eq!(parse_verifier_key(&verifier_key_string("a.example/b", &key)), Ok(("a.example/b".to_owned(), key)));
    }
}

#[test]
fn verifier_key_rejects_mismatches_and_garbage() {
    let key = fixed_key().verifying_key();
    let vkey = verifier_key_string(NAME, &key);
    let (name, rest) = vkey.split_once('+').unwrap();
    let (id, key_b64) = rest.split_once('+').unwrap();

    // Same key under another name keeps the old key id: mismatch.
    let renamed = format!("other.example/log+{id}+{key_b64}");
    assert!(matches!(parse_verifier_key(&renamed), Err(CheckpointError::KeyIdMismatch { .. })));
    // Another key with this key id.
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    let other_b64 = verifier_key_string(NAME, &other).splitn(3, '+').nth(2).unwrap().to_owned();
    let swapped = format!("{name}+{id}+{other_b64}");
    assert!(matches!(parse_verifier_key(&swapped), Err(CheckpointError::KeyIdMismatch { .. })));
    // A wrong key id.
    let wrong_id = format!("{name}+00000000+{key_b64}");
    assert_eq!(
        parse_verifier_key(&wrong_id),
        Err(CheckpointError::KeyIdMismatch { expected: id.to_owned(), found: "00000000".to_owned() })
    );

    let mut ecdsa = BASE64.decode(key_b64).unwrap();
    ecdsa[0] = 0x02;
    let identity = {
        let mut k = [0u8; 33];
        k[0] = 0x01;
        k[1] = 0x01; // The identity point: small order.
        k
    };
    let identity_key = VerifyingKey::from_bytes(&identity[1..].try_into().unwrap()).unwrap();
    let identity_id = hex::encode(key_id(NAME, &identity_key));
    let bad = [
        String::new(),
        name.to_owned(),
        format!("{name}+{id}"),
        format!("+{id}+{key_b64}"),
        format!("bad name+{id}+{key_b64}"),
        format!("{name}+{}+{key_b64}", id.to_uppercase()),
        format!("{name}+{}+{key_b64}", &id[1..]),
        format!("{name}+{id}0+{key_b64}"),
        format!("{name}+{id}+{}", &key_b64[..key_b64.len() - 1]),
        format!("{name}+{id}+{key_b64}="),
        format!("{name}+{id}+{}", BASE64.encode(&BASE64.decode(key_b64).unwrap()[..32])),
        format!("{name}+{id}+"),
        format!("{name}+{id}+{key_b64} "),
    ];
    for s in bad {
        assert!(parse_verifier_key(&s).is_err(), "accepted {s:?}");
    }
    assert_eq!(
        parse_verifier_key(&format!("{name}+{id}+{}", BASE64.encode(&ecdsa))),
        Err(CheckpointError::UnsupportedKeyType(0x02))
    );
    assert_eq!(
        parse_verifier_key(&format!("{NAME}+{identity_id}+{}", BASE64.encode(identity))),
        Err(CheckpointError::WeakKey)
    );
}
