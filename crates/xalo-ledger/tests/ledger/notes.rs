//! Signed notes, checkpoints, cosignatures and the witness policy, with known answers
//! from Go's golang.org/x/mod/sumdb/note tests and the C2SP signed-note and
//! tlog-cosignature specs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use xalo_ledger::cosignature::{cosign_note, cosigned_message, timestamp_of};
use xalo_ledger::note::{self, Limits, NoteSigner, NoteVerifier, key_id};
use xalo_ledger::witness_policy::MAX_CLOCK_SKEW_SECS;
use xalo_ledger::{
    Checkpoint, CosignatureSigner, CosignatureVerifier, Ed25519Signer, Ed25519Verifier, Hash,
    LedgerError, Note, VerifierSet, WitnessPolicy,
};

// golang.org/x/mod/sumdb/note note_test.go: TestNewSigner, TestSign, TestOpen.
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

// c2sp.org/signed-note, "Example".
const FOO_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const FOO_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

fn set(vkeys: &[&str]) -> VerifierSet {
    let mut s = VerifierSet::new();
    for k in vkeys {
        s.add_verifier_key(k).unwrap();
    }
    s
}

#[test]
fn go_sumdb_signature_is_reproduced_exactly() {
    let signer = Ed25519Signer::from_signer_key(PETER_SKEY).unwrap();
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.verifier().verifier_key(), PETER_VKEY);
    assert_eq!(signer.signer_key(), PETER_SKEY);
    let signed = note::sign_note(PETER_TEXT, &[&signer]).unwrap();
    assert_eq!(signed, format!("{PETER_TEXT}\n{PETER_SIG}"));
}

#[test]
fn go_sumdb_open() {
    let msg = format!("{PETER_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let one = note::open(msg.as_bytes(), &set(&[PETER_VKEY])).unwrap();
    assert_eq!(one.text, PETER_TEXT);
    assert_eq!(one.verified.len(), 1);
    assert_eq!(one.unverified.len(), 1);
    assert_eq!(one.unverified[0].key_id, 0xaf0cfe78);
    let both = note::open(msg.as_bytes(), &set(&[PETER_VKEY, ENOCH_VKEY])).unwrap();
    assert_eq!(both.verified.len(), 2);
    assert!(both.unverified.is_empty());
    assert_eq!(
        note::open(msg.as_bytes(), &VerifierSet::new()),
        Err(LedgerError::NoteUnverified)
    );
}

#[test]
fn c2sp_signed_note_example_verifies() {
    let v = Ed25519Verifier::from_verifier_key(FOO_VKEY).unwrap();
    assert_eq!(v.key_id(), 0x530d903a);
    assert_eq!(key_id("example.com/foo", 0x01, &v.public_key()), 0x530d903a);
    let n = note::open(FOO_NOTE.as_bytes(), &set(&[FOO_VKEY])).unwrap();
    assert_eq!(n.text, "This is an example message.\n");
}

#[test]
fn notes_are_rejected_when_wrong() {
    let peter = set(&[PETER_VKEY]);
    let good = format!("{PETER_TEXT}\n{PETER_SIG}");
    // Text changed under the signature.
    let changed = good.replacen("cryptography", "Cryptography", 1);
    assert!(matches!(
        note::open(changed.as_bytes(), &peter),
        Err(LedgerError::SignatureInvalid { .. })
    ));
    // A known key signing twice.
    let twice = format!("{good}{PETER_SIG}");
    assert!(matches!(
        note::open(twice.as_bytes(), &peter),
        Err(LedgerError::DuplicateSignature { .. })
    ));
    // Same name, other key id: unknown, so ignored, and nothing else verifies.
    let other_id = "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    assert!(
        VerifierSet::new().add_verifier_key(other_id).is_err(),
        "id must match the key"
    );
    for bad in [
        format!("{PETER_TEXT}{PETER_SIG}"),                // no blank line
        format!("{PETER_TEXT}\n"),                         // no signatures
        format!("{PETER_TEXT}\n{}", PETER_SIG.trim_end()), // no final newline
        format!("{PETER_TEXT}\n- PeterNeumann x08go/ZJ=\n"), // hyphen, not em dash
        format!("{PETER_TEXT}\n\u{2014} PeterNeumann !!!\n"),
        format!("{PETER_TEXT}\n\u{2014} PeterNeumann AAAA\n"), // shorter than a key id
        format!("a\tb\n\n{PETER_SIG}"),                        // control character
    ] {
        assert!(note::open(bad.as_bytes(), &peter).is_err(), "{bad:?}");
    }
    assert!(note::open(&[0xff, b'\n', b'\n'], &peter).is_err());
    // Size limits.
    let small = Limits {
        max_bytes: 64,
        max_signatures: 100,
    };
    assert!(matches!(
        Note::parse(good.as_bytes(), &small),
        Err(LedgerError::NoteTooLarge(_))
    ));
    let few = Limits {
        max_bytes: 1 << 20,
        max_signatures: 1,
    };
    let two = format!("{PETER_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert!(matches!(
        Note::parse(two.as_bytes(), &few),
        Err(LedgerError::NoteTooLarge(_))
    ));
    // Two verifiers for one name and id are refused.
    let mut s = set(&[PETER_VKEY]);
    assert!(matches!(
        s.add_verifier_key(PETER_VKEY),
        Err(LedgerError::AmbiguousKey { .. })
    ));
}

#[test]
fn signed_checkpoints_round_trip() {
    let log = Ed25519Signer::generate("example.com/xalo").unwrap();
    let cp = Checkpoint::new("example.com/xalo", 42, Hash([9; 32])).unwrap();
    let signed = cp.sign(&[&log]).unwrap();
    let mut verifiers = VerifierSet::new();
    verifiers.add(Box::new(log.verifier())).unwrap();
    let n = note::open(signed.as_bytes(), &verifiers).unwrap();
    assert_eq!(Checkpoint::from_verified_note(&n).unwrap(), cp);
}

#[test]
fn cosignature_message_and_spec_example_timestamp() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        String::from_utf8(cosigned_message(1_679_315_147, body)).unwrap(),
        format!("cosignature/v1\ntime 1679315147\n{body}")
    );
    // The spec's example cosignature line carries key id then the time 1679315147.
    let line = "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
    let note = format!("{body}\n\u{2014} witness.example.com/w1 {line}\n");
    let parsed = Note::parse(note.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(timestamp_of(&parsed.signatures()[0]), Some(1_679_315_147));
    assert_eq!(STANDARD.decode(line).unwrap().len(), 4 + 8 + 64);
}

#[test]
fn cosignatures_sign_and_verify() {
    let w = CosignatureSigner::generate("witness.example/w1").unwrap();
    let v = w.verifier();
    assert_eq!(
        key_id("witness.example/w1", 0x04, &v.public_key()),
        v.key_id()
    );
    // Key strings round-trip and carry type 0x04.
    assert_eq!(
        CosignatureVerifier::from_verifier_key(&v.verifier_key()).unwrap(),
        v
    );
    assert_eq!(
        CosignatureSigner::from_signer_key(&w.signer_key())
            .unwrap()
            .verifier(),
        v
    );
    assert!(Ed25519Verifier::from_verifier_key(&v.verifier_key()).is_err());

    let body = Checkpoint::new("example.com/xalo", 7, Hash([1; 32]))
        .unwrap()
        .to_text();
    let sig = w.cosign(&body, 1_700_000_000).unwrap();
    assert_eq!(sig.signature.len(), 72);
    assert_eq!(
        v.verify_cosignature(body.as_bytes(), &sig.signature),
        Ok(1_700_000_000)
    );
    // Another time, another text, another key: all fail.
    let mut later = sig.signature.clone();
    later[7] ^= 1;
    assert!(v.verify_cosignature(body.as_bytes(), &later).is_err());
    assert!(!v.verify(body.replace('7', "8").as_bytes(), &sig.signature));
    let other = CosignatureSigner::generate("witness.example/w1")
        .unwrap()
        .verifier();
    assert!(!other.verify(body.as_bytes(), &sig.signature));
    // Only checkpoints are cosigned; the time must fit in 63 bits.
    assert!(w.cosign("not a checkpoint\n", 1).is_err());
    assert!(w.cosign(&body, 1 << 63).is_err());
    // Through the NoteSigner trait, at the current time.
    let mut n = Note::new(body.clone()).unwrap();
    n.sign(&w).unwrap();
    assert!(timestamp_of(&n.signatures()[0]).is_some_and(|t| t > 1_700_000_000));
}

struct Setup {
    log: Ed25519Signer,
    witnesses: Vec<CosignatureSigner>,
    signed: String,
}

fn setup(n: usize) -> Setup {
    let log = Ed25519Signer::generate("example.com/xalo").unwrap();
    let witnesses = (0..n)
        .map(|i| CosignatureSigner::generate(&format!("witness.example/w{i}")).unwrap())
        .collect();
    let signed = Checkpoint::new("example.com/xalo", 100, Hash([3; 32]))
        .unwrap()
        .sign(&[&log])
        .unwrap();
    Setup {
        log,
        witnesses,
        signed,
    }
}

fn policy(s: &Setup, k: usize) -> WitnessPolicy {
    WitnessPolicy::new(
        "example.com/xalo",
        s.log.verifier(),
        s.witnesses.iter().map(|w| w.verifier()).collect(),
        k,
    )
    .unwrap()
}

#[test]
fn witness_policy_counts_k_of_n() {
    let s = setup(3);
    let p = policy(&s, 2);
    let now = 1_800_000_000;
    let one = cosign_note(s.signed.as_bytes(), &s.witnesses[0], now).unwrap();
    assert_eq!(
        p.verify(one.as_bytes(), Some(now)),
        Err(LedgerError::WitnessQuorum { got: 1, needed: 2 })
    );
    let two = cosign_note(one.as_bytes(), &s.witnesses[2], now - 10).unwrap();
    let ok = p.verify(two.as_bytes(), Some(now)).unwrap();
    assert_eq!(ok.checkpoint.size, 100);
    assert_eq!(
        ok.cosigners,
        [
            ("witness.example/w0".to_owned(), now),
            ("witness.example/w2".to_owned(), now - 10)
        ]
    );
    // A cosignature dated too far ahead does not count.
    let future = cosign_note(
        one.as_bytes(),
        &s.witnesses[1],
        now + MAX_CLOCK_SKEW_SECS + 1,
    )
    .unwrap();
    assert!(p.verify(future.as_bytes(), Some(now)).is_err());
    assert!(p.verify(future.as_bytes(), None).is_ok());
    // Unknown witnesses are ignored and do not count.
    let stranger = CosignatureSigner::generate("witness.example/x").unwrap();
    let with_stranger = cosign_note(one.as_bytes(), &stranger, now).unwrap();
    assert!(matches!(
        p.verify(with_stranger.as_bytes(), Some(now)),
        Err(LedgerError::WitnessQuorum { got: 1, .. })
    ));
}

#[test]
fn witness_policy_needs_the_log_and_rejects_forgeries() {
    let s = setup(2);
    let p = policy(&s, 1);
    let now = 1_800_000_000;
    let good = cosign_note(s.signed.as_bytes(), &s.witnesses[0], now).unwrap();
    assert!(p.verify(good.as_bytes(), Some(now)).is_ok());
    // Cosigned but not signed by the log.
    let body = Checkpoint::parse(
        Note::parse(s.signed.as_bytes(), &Limits::default())
            .unwrap()
            .text(),
    )
    .unwrap()
    .to_text();
    let mut unsigned = Note::new(body).unwrap();
    unsigned.add_signature(s.witnesses[0].cosign(unsigned.text(), now).unwrap());
    unsigned.add_signature(s.witnesses[1].cosign(unsigned.text(), now).unwrap());
    assert_eq!(
        p.verify(unsigned.to_text().as_bytes(), Some(now)),
        Err(LedgerError::NoteUnverified)
    );
    // A cosignature over a different checkpoint is a bad signature, not a missing one.
    let other = Checkpoint::new("example.com/xalo", 101, Hash([3; 32])).unwrap();
    let forged_sig = s.witnesses[1].cosign(&other.to_text(), now).unwrap();
    let mut forged = Note::parse(good.as_bytes(), &Limits::default()).unwrap();
    forged.add_signature(forged_sig);
    assert!(matches!(
        p.verify(forged.to_text().as_bytes(), Some(now)),
        Err(LedgerError::SignatureInvalid { .. })
    ));
    // Wrong origin for this policy.
    let elsewhere = WitnessPolicy::new(
        "example.com/other",
        s.log.verifier(),
        vec![s.witnesses[0].verifier()],
        1,
    )
    .unwrap();
    assert!(elsewhere.verify(good.as_bytes(), Some(now)).is_err());
    // Impossible or ambiguous policies.
    assert!(WitnessPolicy::new("o", s.log.verifier(), vec![], 1).is_err());
    let w = s.witnesses[0].verifier();
    assert!(WitnessPolicy::new("o", s.log.verifier(), vec![w.clone(), w], 1).is_err());
}
