//! C2SP signed notes with Ed25519 signatures.
//!
//! A note is text ending in a newline, a blank line, and signature lines
//! `— <key name> base64(key id || signature)`. Keys travel as strings: verifier keys
//! `<name>+<hex key id>+base64(type || public key)` and signer keys
//! `PRIVATE+KEY+<name>+<hex key id>+base64(type || seed)`, as Go's `sumdb/note` writes them.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::LedgerError;

/// Signature type byte of plain Ed25519 note signatures.
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// The em dash (U+2014) and space that open a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Bounds on notes accepted from outside, so a hostile note costs little to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    /// The spec asks verifiers to accept at least 16.
    pub max_signatures: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_signatures: 100,
        }
    }
}

/// The key id of a key: the first four bytes of SHA-256(name || 0x0A || type || key).
pub fn key_id(name: &str, sig_type: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, sig_type]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Key names are non-empty and hold no spaces, no `+` and no control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn malformed(why: impl Into<String>) -> LedgerError {
    LedgerError::NoteMalformed(why.into())
}

fn key_error(why: impl Into<String>) -> LedgerError {
    LedgerError::KeyMalformed(why.into())
}

/// Note text: non-empty, ending in a newline, no control characters but newlines.
pub fn check_text(text: &str) -> Result<(), LedgerError> {
    if !text.ends_with('\n') {
        return Err(malformed("text must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(malformed("text holds a control character"));
    }
    Ok(())
}

/// One signature line.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature proper, without the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// `— name base64(key id || signature)` and a newline.
    pub fn to_line(&self) -> String {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(bytes)
        )
    }

    fn parse_line(line: &str) -> Result<NoteSignature, LedgerError> {
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            malformed(format!(
                "signature line {line:?} does not start with an em dash"
            ))
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed(format!("signature line {line:?} has no signature")))?;
        if !is_valid_key_name(name) {
            return Err(malformed(format!("bad key name {name:?}")));
        }
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| malformed(format!("signature of {name}: {e}")))?;
        match bytes.as_slice() {
            [a, b, c, d, sig @ ..] if !sig.is_empty() => Ok(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([*a, *b, *c, *d]),
                signature: sig.to_vec(),
            }),
            _ => Err(malformed(format!("signature of {name} is too short"))),
        }
    }
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({}+{:08x})", self.name, self.key_id)
    }
}

/// Something that signs note text: a log key, a witness key.
pub trait NoteSigner {
    fn name(&self) -> &str;
    fn key_id(&self) -> u32;
    /// The signature over `text` (the key id is added by the note).
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, LedgerError>;
}

/// Something that checks a signature line of a known key.
pub trait NoteVerifier: Send + Sync {
    fn name(&self) -> &str;
    fn key_id(&self) -> u32;
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// A note: its text and signature lines, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note with `text`.
    pub fn new(text: impl Into<String>) -> Result<Note, LedgerError> {
        let text = text.into();
        check_text(&text)?;
        Ok(Note {
            text,
            signatures: Vec::new(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Parse a signed note without verifying it.
    pub fn parse(msg: &[u8], limits: &Limits) -> Result<Note, LedgerError> {
        if msg.len() > limits.max_bytes {
            return Err(LedgerError::NoteTooLarge(format!(
                "{} bytes, at most {}",
                msg.len(),
                limits.max_bytes
            )));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| malformed("not valid UTF-8"))?;
        check_text(msg)?;
        // The text ends at the last blank line: signature lines are never empty.
        let split = msg
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let text = &msg[..=split];
        let block = &msg[split + 2..];
        if block.is_empty() {
            return Err(malformed("no signature lines"));
        }
        let lines: Vec<&str> = block.trim_end_matches('\n').split('\n').collect();
        if lines.len() > limits.max_signatures {
            return Err(LedgerError::NoteTooLarge(format!(
                "{} signatures, at most {}",
                lines.len(),
                limits.max_signatures
            )));
        }
        let signatures = lines
            .into_iter()
            .map(NoteSignature::parse_line)
            .collect::<Result<_, _>>()?;
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Sign the text with `signer`, replacing an earlier signature by the same key.
    pub fn sign(&mut self, signer: &dyn NoteSigner) -> Result<(), LedgerError> {
        if !is_valid_key_name(signer.name()) {
            return Err(key_error(format!("bad key name {:?}", signer.name())));
        }
        let signature = signer.sign(self.text.as_bytes())?;
        self.add_signature(NoteSignature {
            name: signer.name().to_owned(),
            key_id: signer.key_id(),
            signature,
        });
        Ok(())
    }

    /// Add a signature made elsewhere (a witness's cosignature), replacing one by the same
    /// key.
    pub fn add_signature(&mut self, signature: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == signature.name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// The note as sent: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Verify against `verifiers`: every signature by a known key must verify, at least one
    /// must exist, no key may sign twice; signatures by unknown keys are set aside.
    pub fn verify(&self, verifiers: &VerifierSet) -> Result<VerifiedNote, LedgerError> {
        let mut seen = BTreeSet::new();
        let mut verified = Vec::new();
        let mut unverified = Vec::new();
        for s in &self.signatures {
            if !seen.insert((s.name.as_str(), s.key_id)) {
                return Err(LedgerError::DuplicateSignature {
                    name: s.name.clone(),
                    key_id: s.key_id,
                });
            }
            match verifiers.find(&s.name, s.key_id) {
                Some(v) if v.verify(self.text.as_bytes(), &s.signature) => verified.push(s.clone()),
                Some(_) => {
                    return Err(LedgerError::SignatureInvalid {
                        name: s.name.clone(),
                        key_id: s.key_id,
                    });
                }
                None => unverified.push(s.clone()),
            }
        }
        if verified.is_empty() {
            return Err(LedgerError::NoteUnverified);
        }
        Ok(VerifiedNote {
            text: self.text.clone(),
            verified,
            unverified,
        })
    }
}

/// Sign `text` with each signer and render the note.
pub fn sign_note(text: &str, signers: &[&dyn NoteSigner]) -> Result<String, LedgerError> {
    let mut note = Note::new(text)?;
    for s in signers {
        note.sign(*s)?;
    }
    Ok(note.to_text())
}

/// Parse and verify a signed note under the default [`Limits`].
pub fn open(msg: &[u8], verifiers: &VerifierSet) -> Result<VerifiedNote, LedgerError> {
    Note::parse(msg, &Limits::default())?.verify(verifiers)
}

/// A note whose text is vouched for by at least one trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    pub text: String,
    /// Signatures by known keys, all verified.
    pub verified: Vec<NoteSignature>,
    /// Signatures by keys not in the verifier set, not checked.
    pub unverified: Vec<NoteSignature>,
}

impl VerifiedNote {
    /// Whether the key `name`+`key_id` signed the note.
    pub fn is_signed_by(&self, name: &str, key_id: u32) -> bool {
        self.verified
            .iter()
            .any(|s| s.name == name && s.key_id == key_id)
    }
}

/// The keys a reader trusts, at most one per (name, key id).
#[derive(Default)]
pub struct VerifierSet {
    verifiers: Vec<Box<dyn NoteVerifier>>,
}

impl fmt::Debug for VerifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.verifiers
                    .iter()
                    .map(|v| format!("{}+{:08x}", v.name(), v.key_id())),
            )
            .finish()
    }
}

impl VerifierSet {
    pub fn new() -> VerifierSet {
        VerifierSet::default()
    }

    /// Add a verifier; two for the same name and key id would make notes ambiguous.
    pub fn add(&mut self, verifier: Box<dyn NoteVerifier>) -> Result<(), LedgerError> {
        if self.find(verifier.name(), verifier.key_id()).is_some() {
            return Err(LedgerError::AmbiguousKey {
                name: verifier.name().to_owned(),
                key_id: verifier.key_id(),
            });
        }
        self.verifiers.push(verifier);
        Ok(())
    }

    /// Add a verifier key string of a type this crate knows (Ed25519 or cosignature/v1).
    pub fn add_verifier_key(&mut self, vkey: &str) -> Result<(), LedgerError> {
        let key = parse_verifier_key(vkey)?;
        match key.sig_type {
            SIG_TYPE_ED25519 => self.add(Box::new(Ed25519Verifier::from_verifier_key(vkey)?)),
            crate::cosignature::SIG_TYPE_COSIGNATURE_V1 => self.add(Box::new(
                crate::cosignature::CosignatureVerifier::from_verifier_key(vkey)?,
            )),
            t => Err(key_error(format!("unsupported signature type 0x{t:02x}"))),
        }
    }

    pub fn find(&self, name: &str, key_id: u32) -> Option<&dyn NoteVerifier> {
        self.verifiers
            .iter()
            .find(|v| v.name() == name && v.key_id() == key_id)
            .map(|v| v.as_ref())
    }

    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }
}

/// The parts of a key string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub name: String,
    pub key_id: u32,
    pub sig_type: u8,
    /// The public key (verifier keys) or the secret seed (signer keys).
    pub material: Vec<u8>,
}

fn parse_key_parts(name: &str, id_hex: &str, b64: &str) -> Result<KeyParts, LedgerError> {
    if !is_valid_key_name(name) {
        return Err(key_error(format!("bad key name {name:?}")));
    }
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(key_error(format!("key id {id_hex:?} is not 8 hex digits")));
    }
    let key_id = u32::from_str_radix(id_hex, 16).map_err(|e| key_error(e.to_string()))?;
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| key_error(format!("key material: {e}")))?;
    let (sig_type, material) = bytes
        .split_first()
        .ok_or_else(|| key_error("no key material"))?;
    Ok(KeyParts {
        name: name.to_owned(),
        key_id,
        sig_type: *sig_type,
        material: material.to_vec(),
    })
}

/// Split `<name>+<hex id>+base64(type || key)`.
pub fn parse_verifier_key(vkey: &str) -> Result<KeyParts, LedgerError> {
    // Base64 may itself hold `+`, so only the first two separate.
    match vkey.splitn(3, '+').collect::<Vec<_>>().as_slice() {
        [name, id, b64] => parse_key_parts(name, id, b64),
        _ => Err(key_error("verifier key is not name+id+key")),
    }
}

/// Split `PRIVATE+KEY+<name>+<hex id>+base64(type || seed)`.
pub fn parse_signer_key(skey: &str) -> Result<KeyParts, LedgerError> {
    match skey.splitn(5, '+').collect::<Vec<_>>().as_slice() {
        ["PRIVATE", "KEY", name, id, b64] => parse_key_parts(name, id, b64),
        _ => Err(key_error("signer key is not PRIVATE+KEY+name+id+key")),
    }
}

pub(crate) fn encode_key(name: &str, key_id: u32, sig_type: u8, material: &[u8]) -> String {
    let mut bytes = vec![sig_type];
    bytes.extend_from_slice(material);
    format!("{name}+{key_id:08x}+{}", STANDARD.encode(bytes))
}

/// An Ed25519 key pair's parts from a signer key of `sig_type`, with its id checked.
pub(crate) fn signing_key_from(
    skey: &str,
    sig_type: u8,
) -> Result<(String, SigningKey, u32), LedgerError> {
    let parts = parse_signer_key(skey)?;
    if parts.sig_type != sig_type {
        return Err(key_error(format!(
            "signature type 0x{:02x}, expected 0x{sig_type:02x}",
            parts.sig_type
        )));
    }
    let seed: [u8; 32] = parts
        .material
        .as_slice()
        .try_into()
        .map_err(|_| key_error("an Ed25519 seed has 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    let id = key_id(&parts.name, sig_type, key.verifying_key().as_bytes());
    if id != parts.key_id {
        return Err(key_error(format!(
            "key id {:08x} does not match the key ({id:08x})",
            parts.key_id
        )));
    }
    Ok((parts.name, key, id))
}

/// An Ed25519 public key's parts from a verifier key of `sig_type`, with its id checked.
pub(crate) fn verifying_key_from(
    vkey: &str,
    sig_type: u8,
) -> Result<(String, VerifyingKey, u32), LedgerError> {
    let parts = parse_verifier_key(vkey)?;
    if parts.sig_type != sig_type {
        return Err(key_error(format!(
            "signature type 0x{:02x}, expected 0x{sig_type:02x}",
            parts.sig_type
        )));
    }
    let key = verifying_key(&parts.material)?;
    let id = key_id(&parts.name, sig_type, key.as_bytes());
    if id != parts.key_id {
        return Err(key_error(format!(
            "key id {:08x} does not match the key ({id:08x})",
            parts.key_id
        )));
    }
    Ok((parts.name, key, id))
}

pub(crate) fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey, LedgerError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| key_error("an Ed25519 public key has 32 bytes"))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| key_error(format!("Ed25519 public key: {e}")))
}

pub(crate) fn check_name(name: &str) -> Result<(), LedgerError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(key_error(format!("bad key name {name:?}")))
    }
}

/// A fresh random Ed25519 seed.
pub(crate) fn random_seed() -> [u8; 32] {
    rand::random()
}

/// Strict Ed25519 verification: rejects malleable and small-order forms that honest
/// signers never produce.
pub(crate) fn ed25519_verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    Signature::from_slice(sig).is_ok_and(|s| key.verify_strict(msg, &s).is_ok())
}

/// A note signing key (signature type 0x01).
#[derive(Clone)]
pub struct Ed25519Signer {
    name: String,
    key: SigningKey,
    key_id: u32,
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Ed25519Signer({}+{:08x})", self.name, self.key_id)
    }
}

impl Ed25519Signer {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Ed25519Signer, LedgerError> {
        Ed25519Signer::from_seed(name, &random_seed())
    }

    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Ed25519Signer, LedgerError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, SIG_TYPE_ED25519, key.verifying_key().as_bytes());
        Ok(Ed25519Signer {
            name: name.to_owned(),
            key,
            key_id,
        })
    }

    /// From `PRIVATE+KEY+name+id+base64(0x01 || seed)`.
    pub fn from_signer_key(skey: &str) -> Result<Ed25519Signer, LedgerError> {
        let (name, key, key_id) = signing_key_from(skey, SIG_TYPE_ED25519)?;
        Ok(Ed25519Signer { name, key, key_id })
    }

    /// The secret key string; keep it as secret as the key.
    pub fn signer_key(&self) -> String {
        format!(
            "PRIVATE+KEY+{}",
            encode_key(
                &self.name,
                self.key_id,
                SIG_TYPE_ED25519,
                self.key.as_bytes()
            )
        )
    }

    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            key_id: self.key_id,
        }
    }
}

impl NoteSigner for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, LedgerError> {
        Ok(self.key.sign(text).to_bytes().to_vec())
    }
}

/// A note verifier key (signature type 0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key: VerifyingKey,
    key_id: u32,
}

impl Ed25519Verifier {
    pub fn new(name: &str, public_key: &[u8]) -> Result<Ed25519Verifier, LedgerError> {
        check_name(name)?;
        let key = verifying_key(public_key)?;
        Ok(Ed25519Verifier {
            name: name.to_owned(),
            key_id: key_id(name, SIG_TYPE_ED25519, key.as_bytes()),
            key,
        })
    }

    /// From `name+id+base64(0x01 || public key)`.
    pub fn from_verifier_key(vkey: &str) -> Result<Ed25519Verifier, LedgerError> {
        let (name, key, key_id) = verifying_key_from(vkey, SIG_TYPE_ED25519)?;
        Ok(Ed25519Verifier { name, key, key_id })
    }

    pub fn verifier_key(&self) -> String {
        encode_key(
            &self.name,
            self.key_id,
            SIG_TYPE_ED25519,
            self.key.as_bytes(),
        )
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl NoteVerifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        ed25519_verify(&self.key, text, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_round_trip() {
        let s = Ed25519Signer::generate("example.com/log").unwrap();
        let again = Ed25519Signer::from_signer_key(&s.signer_key()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        let v = Ed25519Verifier::from_verifier_key(&s.verifier().verifier_key()).unwrap();
        assert_eq!(v, s.verifier());
        assert!(!format!("{s:?}").contains(&s.signer_key()[20..]));
    }

    #[test]
    fn bad_names_and_keys() {
        assert!(Ed25519Signer::generate("a b").is_err());
        assert!(Ed25519Signer::generate("a+b").is_err());
        assert!(Ed25519Signer::generate("").is_err());
        assert!(parse_verifier_key("a+b").is_err());
        assert!(parse_verifier_key("a+0102030+AQ==").is_err());
        assert!(parse_signer_key("PRIVATE+KEY+a+b").is_err());
    }

    #[test]
    fn parse_splits_at_the_last_blank_line() {
        let s = Ed25519Signer::generate("k").unwrap();
        let msg = sign_note("a\n\nb\n", &[&s]).unwrap();
        let n = Note::parse(msg.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(n.text(), "a\n\nb\n");
        assert_eq!(n.signatures().len(), 1);
    }
}
