//! C2SP tlog-checkpoint: the note text of a signed tree head.
//!
//! ```text
//! <origin>
//! <tree size in decimal>
//! <base64 root hash>
//! [extension lines]
//! ```

use crate::note::{self, NoteSigner, VerifiedNote};
use crate::{Hash, LedgerError};

/// A tree head as a log states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Opaque, non-empty lines after the root hash; rarely used.
    pub extensions: Vec<String>,
}

fn malformed(why: impl Into<String>) -> LedgerError {
    LedgerError::CheckpointMalformed(why.into())
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(
        origin: impl Into<String>,
        size: u64,
        root: Hash,
    ) -> Result<Checkpoint, LedgerError> {
        let c = Checkpoint {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), LedgerError> {
        let line_ok = |l: &str| !l.is_empty() && !l.chars().any(char::is_control);
        if !line_ok(&self.origin) {
            return Err(malformed("origin must be a non-empty line"));
        }
        if let Some(e) = self.extensions.iter().find(|e| !line_ok(e)) {
            return Err(malformed(format!(
                "extension line {e:?} must be a non-empty line"
            )));
        }
        Ok(())
    }

    /// The note text: every line ends in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            text.push_str(e);
            text.push('\n');
        }
        text
    }

    /// Parse note text strictly: a decimal size without leading zeros, the canonical
    /// base64 of 32 bytes, no empty lines, a final newline.
    pub fn parse(text: &str) -> Result<Checkpoint, LedgerError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("needs an origin, a tree size and a root hash"));
        };
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = size
            .parse::<u64>()
            .ok()
            .filter(|_| size_ok)
            .ok_or_else(|| malformed(format!("tree size {size:?} is not a decimal number")))?;
        let root = Hash::from_base64(root)
            .map_err(|_| malformed(format!("root hash {root:?} is not base64 of 32 bytes")))?;
        let c = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: lines.map(str::to_owned).collect(),
        };
        c.check()?;
        Ok(c)
    }

    /// The checkpoint of a note whose signatures were verified.
    pub fn from_verified_note(note: &VerifiedNote) -> Result<Checkpoint, LedgerError> {
        Checkpoint::parse(&note.text)
    }

    /// The checkpoint as a signed note.
    pub fn sign(&self, signers: &[&dyn NoteSigner]) -> Result<String, LedgerError> {
        self.check()?;
        note::sign_note(&self.to_text(), signers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn parses_the_spec_example() {
        let c = Checkpoint::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20_852_163);
        assert_eq!(c.to_text(), SPEC_EXAMPLE);
    }

    #[test]
    fn rejects_what_is_not_strict() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        for bad in [
            String::new(),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n1 \n{root}\n"),
            "o\n1\nAAAA\n".to_owned(),
            format!("o\n1\n{}\n", &root[..root.len() - 1]),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\next\n\n"),
            format!("o\t\n1\n{root}\n"),
            "o\n1\n".to_owned(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Checkpoint::parse(&format!("o\n0\n{root}\n")).unwrap().size,
            0
        );
        let ext = Checkpoint::parse(&format!("o\n1\n{root}\nx y\n")).unwrap();
        assert_eq!(ext.extensions, ["x y"]);
    }
}
