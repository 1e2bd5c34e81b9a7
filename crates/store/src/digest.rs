//! SHA-256 digests, shown and stored as lower-case hex.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Size of the read buffer used when hashing files and readers.
const BUFFER: usize = 1 << 20;

/// A SHA-256 digest. Displays, parses and serialises as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// A string that is not 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected 64 lower-case hex digits")]
pub struct ParseDigestError(pub String);

impl Digest {
    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Digest of everything `reader` yields, read in 1 MiB chunks.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Digest> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; BUFFER];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => return Ok(Digest(hasher.finalize().into())),
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Digest of a file's bytes, streamed.
    pub fn of_file(path: &Path) -> io::Result<Digest> {
        Digest::of_reader(File::open(path)?)
    }

    /// The first 12 hex digits, for logs and reports.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// The first 2 hex digits: the fan-out directory of files named by this digest.
    pub(crate) fn fan_out(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        let lower_hex = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut bytes = [0u8; 32];
        match lower_hex && hex::decode_to_slice(s, &mut bytes).is_ok() {
            true => Ok(Digest(bytes)),
            false => Err(ParseDigestError(s.to_owned())),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of_bytes(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.to_string(), hex);
        assert_eq!(format!("{d:?}"), hex);
        assert_eq!(d.short(), &hex[..12]);
        assert_eq!(hex.parse::<Digest>(), Ok(d));
        assert_eq!(serde_json::to_string(&d).ok(), Some(format!("\"{hex}\"")));
        assert_eq!(
            serde_json::from_str::<Digest>(&format!("\"{hex}\"")).ok(),
            Some(d)
        );
        assert!(hex[..63].parse::<Digest>().is_err());
        assert!(hex.to_uppercase().parse::<Digest>().is_err());
        assert!(format!("{}g", &hex[..63]).parse::<Digest>().is_err());
    }

    #[test]
    fn reader_and_file_agree_with_bytes() -> io::Result<()> {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, &data)?;
        assert_eq!(Digest::of_reader(&data[..])?, Digest::of_bytes(&data));
        assert_eq!(Digest::of_file(&path)?, Digest::of_bytes(&data));
        Ok(())
    }
}
