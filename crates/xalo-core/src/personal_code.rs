//! Personal identification numbers of the people Xalo serves.
//!
//! Two national schemes are understood:
//! - Vietnam's 12-digit *số định danh cá nhân*: province of birth registration (3 digits,
//!   Circular 07/2016/TT-BCA), century-and-gender digit, last two digits of the birth year,
//!   and a 6-digit serial. It carries no check digit.
//! - Estonia's 11-digit *isikukood*: century-and-gender digit, YYMMDD, a 3-digit serial and
//!   a two-pass mod-11 check digit. e-Residents receive codes of this form.
//!
//! The canonical written form is country-prefixed (`VN001203012345`, `EE38001085718`), as
//! TARA's `sub` claim writes it; that is also the serde form.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a personal code was rejected. Each defect has its own variant and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonalCodeError {
    #[error("a {country} personal code has {expected} digits, this one has {found}")]
    Length {
        country: Country,
        expected: usize,
        found: usize,
    },
    #[error("character {position} of the personal code is not a digit")]
    NonDigit { position: usize },
    #[error("unknown province code {0:03} (Circular 07/2016/TT-BCA lists 63)")]
    UnknownProvince(u16),
    #[error("check digit is {found}, the code's digits give {expected}")]
    BadCheckDigit { expected: u8, found: u8 },
    #[error("the code's digits name no real birth date")]
    ImpossibleDate,
    #[error("unknown country prefix {0:?}: expected VN or EE")]
    UnknownCountry(String),
}

impl PersonalCodeError {
    /// The stable error code of this defect.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode as C;
        match self {
            Self::Length { .. } => C::PersonalCodeLength,
            Self::NonDigit { .. } => C::PersonalCodeNonDigit,
            Self::UnknownProvince(_) => C::PersonalCodeUnknownProvince,
            Self::BadCheckDigit { .. } => C::PersonalCodeCheckDigit,
            Self::ImpossibleDate => C::PersonalCodeImpossibleDate,
            Self::UnknownCountry(_) => C::PersonalCodeUnknownCountry,
        }
    }
}

impl From<PersonalCodeError> for crate::Error {
    fn from(e: PersonalCodeError) -> Self {
        crate::Error::new(e.code(), e.to_string())
    }
}

/// The country that issued a personal code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Country {
    #[serde(rename = "VN")]
    Vietnam,
    #[serde(rename = "EE")]
    Estonia,
}

impl Country {
    pub fn prefix(self) -> &'static str {
        match self {
            Country::Vietnam => "VN",
            Country::Estonia => "EE",
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
}

/// The province codes of Circular 07/2016/TT-BCA, Appendix 1: code → province name.
static PROVINCES: LazyLock<BTreeMap<u16, &'static str>> = LazyLock::new(|| {
    include_str!("../data/vn-province-codes.csv")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (code, name) = line.split_once(',')?;
            Some((code.trim().parse().ok()?, name.trim()))
        })
        .collect()
});

/// The name of the province that a Vietnamese birth-registration code stands for.
pub fn vn_province_name(code: u16) -> Option<&'static str> {
    PROVINCES.get(&code).copied()
}

/// All Vietnamese birth-registration province codes, ascending.
pub fn vn_province_codes() -> impl Iterator<Item = u16> {
    PROVINCES.keys().copied()
}

/// A validated personal code. Stored as its digits; the country says how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonalCode {
    country: Country,
    /// The national digits as an integer: 12 digits fit easily in u64 and keep the type Copy.
    digits: u64,
}

fn digits_of(s: &str, country: Country, expected: usize) -> Result<Vec<u8>, PersonalCodeError> {
    if let Some(position) = s.chars().position(|c| !c.is_ascii_digit()) {
        return Err(PersonalCodeError::NonDigit { position });
    }
    if s.len() != expected {
        return Err(PersonalCodeError::Length {
            country,
            expected,
            found: s.len(),
        });
    }
    Ok(s.bytes().map(|b| b - b'0').collect())
}

fn number(d: &[u8]) -> u64 {
    d.iter().fold(0, |acc, &x| acc * 10 + u64::from(x))
}

/// Estonian check digit: weights 1..9,1 then, if the remainder is 10, weights 3..9,1,2,3.
fn estonian_check_digit(d: &[u8]) -> u8 {
    const W1: [u8; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1];
    const W2: [u8; 10] = [3, 4, 5, 6, 7, 8, 9, 1, 2, 3];
    let sum = |w: &[u8; 10]| -> u32 {
        d.iter()
            .zip(w)
            .map(|(&a, &b)| u32::from(a) * u32::from(b))
            .sum::<u32>()
            % 11
    };
    match sum(&W1) {
        10 => match sum(&W2) {
            10 => 0,
            r => r as u8,
        },
        r => r as u8,
    }
}

impl PersonalCode {
    /// Parse national digits of the given country (no prefix).
    pub fn parse_national(country: Country, s: &str) -> Result<Self, PersonalCodeError> {
        match country {
            Country::Vietnam => {
                let d = digits_of(s, country, 12)?;
                let province = number(&d[0..3]) as u16;
                if !PROVINCES.contains_key(&province) {
                    return Err(PersonalCodeError::UnknownProvince(province));
                }
                Ok(Self {
                    country,
                    digits: number(&d),
                })
            }
            Country::Estonia => {
                let d = digits_of(s, country, 11)?;
                if !(1..=8).contains(&d[0]) {
                    return Err(PersonalCodeError::ImpossibleDate);
                }
                let century = 1800 + i32::from((d[0] - 1) / 2) * 100;
                let year = century + number(&d[1..3]) as i32;
                let month = number(&d[3..5]) as u32;
                let day = number(&d[5..7]) as u32;
                if NaiveDate::from_ymd_opt(year, month, day).is_none() {
                    return Err(PersonalCodeError::ImpossibleDate);
                }
                let expected = estonian_check_digit(&d[0..10]);
                if expected != d[10] {
                    return Err(PersonalCodeError::BadCheckDigit {
                        expected,
                        found: d[10],
                    });
                }
                Ok(Self {
                    country,
                    digits: number(&d),
                })
            }
        }
    }

    /// Build a Vietnamese code from its parts (used by the synthetic population).
    pub fn vietnamese(
        province: u16,
        gender: Gender,
        birth_year: i32,
        serial: u32,
    ) -> Result<Self, PersonalCodeError> {
        if !PROVINCES.contains_key(&province) {
            return Err(PersonalCodeError::UnknownProvince(province));
        }
        if !(1900..=2399).contains(&birth_year) || serial > 999_999 {
            return Err(PersonalCodeError::ImpossibleDate);
        }
        let century_digit = ((birth_year - 1900) / 100) as u64 * 2
            + match gender {
                Gender::Male => 0,
                Gender::Female => 1,
            };
        let digits = u64::from(province) * 1_000_000_000
            + century_digit * 100_000_000
            + (birth_year % 100) as u64 * 1_000_000
            + u64::from(serial);
        Ok(Self {
            country: Country::Vietnam,
            digits,
        })
    }

    /// Build an Estonian code from a birth date, gender and serial; the check digit is computed.
    pub fn estonian(
        birth: NaiveDate,
        gender: Gender,
        serial: u16,
    ) -> Result<Self, PersonalCodeError> {
        use chrono::Datelike;
        let year = birth.year();
        if !(1800..=2199).contains(&year) || serial > 999 {
            return Err(PersonalCodeError::ImpossibleDate);
        }
        let first = ((year - 1800) / 100) as u8 * 2
            + match gender {
                Gender::Male => 1,
                Gender::Female => 2,
            };
        let s = format!(
            "{first}{:02}{:02}{:02}{serial:03}",
            year % 100,
            birth.month(),
            birth.day()
        );
        let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        let check = estonian_check_digit(&d);
        Self::parse_national(Country::Estonia, &format!("{s}{check}"))
    }

    pub fn country(&self) -> Country {
        self.country
    }

    /// The national digits without the country prefix.
    pub fn national(&self) -> String {
        match self.country {
            Country::Vietnam => format!("{:012}", self.digits),
            Country::Estonia => format!("{:011}", self.digits),
        }
    }

    fn digit(&self, i: usize) -> u8 {
        self.national().as_bytes()[i] - b'0'
    }

    pub fn gender(&self) -> Gender {
        let g = self.digit(if self.country == Country::Vietnam {
            3
        } else {
            0
        });
        match (self.country, g % 2) {
            (Country::Vietnam, 0) | (Country::Estonia, 1) => Gender::Male,
            _ => Gender::Female,
        }
    }

    pub fn birth_year(&self) -> i32 {
        let n = self.national();
        match self.country {
            Country::Vietnam => {
                1900 + i32::from(self.digit(3) / 2) * 100 + n[4..6].parse::<i32>().unwrap_or(0)
            }
            Country::Estonia => {
                1800 + i32::from((self.digit(0) - 1) / 2) * 100
                    + n[1..3].parse::<i32>().unwrap_or(0)
            }
        }
    }

    /// The full birth date, which only Estonian codes carry.
    pub fn birth_date(&self) -> Option<NaiveDate> {
        match self.country {
            Country::Vietnam => None,
            Country::Estonia => {
                let n = self.national();
                NaiveDate::from_ymd_opt(
                    self.birth_year(),
                    n[3..5].parse().ok()?,
                    n[5..7].parse().ok()?,
                )
            }
        }
    }

    /// The province where the birth was registered (Vietnamese codes only).
    pub fn birth_province(&self) -> Option<u16> {
        match self.country {
            Country::Vietnam => Some((self.digits / 1_000_000_000) as u16),
            Country::Estonia => None,
        }
    }

    /// The serial number within province/year (VN) or birth date (EE).
    pub fn serial(&self) -> u32 {
        match self.country {
            Country::Vietnam => (self.digits % 1_000_000) as u32,
            Country::Estonia => ((self.digits / 10) % 1000) as u32,
        }
    }

    /// ETSI EN 319 412-1 semantics identifier for a certificate subject serialNumber.
    pub fn etsi_serial_number(&self) -> String {
        format!("PNO{}-{}", self.country.prefix(), self.national())
    }
}

impl fmt::Display for PersonalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.country.prefix(), self.national())
    }
}

impl FromStr for PersonalCode {
    type Err = PersonalCodeError;

    /// Accepts the prefixed form (`VN…`, `EE…`) or, for convenience, the ETSI form `PNOVN-…`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (etsi, s) = match s.strip_prefix("PNO") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let prefix: String = s.chars().take(2).collect();
        let rest = &s[prefix.len()..];
        let rest = if etsi {
            rest.strip_prefix('-').unwrap_or(rest)
        } else {
            rest
        };
        let country = match prefix.as_str() {
            "VN" => Country::Vietnam,
            "EE" => Country::Estonia,
            _ => return Err(PersonalCodeError::UnknownCountry(prefix)),
        };
        Self::parse_national(country, rest)
    }
}

impl Serialize for PersonalCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PersonalCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        // The code travels in the message so that a JSON body's rejection keeps it.
        s.parse()
            .map_err(|e: PersonalCodeError| serde::de::Error::custom(format!("{}: {e}", e.code())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn estonian_examples() {
        let a: PersonalCode = "EE38001085718".parse().unwrap();
        assert_eq!(a.gender(), Gender::Male);
        assert_eq!(a.birth_date(), NaiveDate::from_ymd_opt(1980, 1, 8));
        let b = PersonalCode::parse_national(Country::Estonia, "60001019906").unwrap();
        assert_eq!(b.gender(), Gender::Female);
        assert_eq!(b.birth_date(), NaiveDate::from_ymd_opt(2000, 1, 1));
        assert_eq!(
            PersonalCode::parse_national(Country::Estonia, "36805280108"),
            Err(PersonalCodeError::BadCheckDigit {
                expected: 9,
                found: 8
            })
        );
    }

    #[test]
    fn estonian_second_pass_check_digit() {
        // A thousand serials of one day cover first-pass remainders of 10, which need the
        // second weight set; constructor and parser must agree on each.
        let day = NaiveDate::from_ymd_opt(1976, 1, 26).unwrap();
        for serial in 0..1000 {
            let c = PersonalCode::estonian(day, Gender::Male, serial).unwrap();
            assert_eq!(c.serial(), u32::from(serial));
        }
    }

    #[test]
    fn vietnamese_parts() {
        let c: PersonalCode = "VN001203012345".parse().unwrap();
        assert_eq!(c.birth_province(), Some(1));
        assert_eq!(vn_province_name(1), Some("Hà Nội"));
        assert_eq!(c.gender(), Gender::Male);
        assert_eq!(c.birth_year(), 2003);
        assert_eq!(c.serial(), 12345);
        assert_eq!(c.etsi_serial_number(), "PNOVN-001203012345");
        assert_eq!("PNOVN-001203012345".parse::<PersonalCode>(), Ok(c));
        let f: PersonalCode = "VN079185000001".parse().unwrap();
        assert_eq!(f.gender(), Gender::Female);
        assert_eq!(f.birth_year(), 1985);
    }

    #[test]
    fn each_defect_has_its_own_error() {
        use PersonalCodeError as E;
        let p = |s: &str| s.parse::<PersonalCode>().unwrap_err();
        assert!(matches!(p("VN00120301234"), E::Length { found: 11, .. }));
        assert!(matches!(p("VN00120301234x"), E::NonDigit { position: 11 }));
        assert_eq!(p("VN003203012345"), E::UnknownProvince(3));
        assert_eq!(p("EE38013085718"), E::ImpossibleDate);
        assert_eq!(p("EE98001085718"), E::ImpossibleDate);
        assert!(matches!(p("FI38001085718"), E::UnknownCountry(_)));
        let codes: std::collections::BTreeSet<_> = [
            p("VN00120301234").code(),
            p("VN00120301234x").code(),
            p("VN003203012345").code(),
            p("EE38013085718").code(),
            p("EE38001085717").code(),
            p("FI1").code(),
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(codes.len(), 6);
    }

    #[test]
    fn all_63_province_codes_loaded() {
        assert_eq!(vn_province_codes().count(), 63);
    }

    #[test]
    fn serde_is_the_prefixed_string() {
        let c: PersonalCode = "EE60001019906".parse().unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"EE60001019906\"");
        let back: PersonalCode = serde_json::from_str("\"EE60001019906\"").unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<PersonalCode>("\"EE60001019907\"").is_err());
    }

    fn province() -> impl Strategy<Value = u16> {
        let codes: Vec<u16> = vn_province_codes().collect();
        proptest::sample::select(codes)
    }

    proptest! {
        #[test]
        fn vietnamese_round_trip(p in province(), female in any::<bool>(), year in 1900i32..2400, serial in 0u32..1_000_000) {
            let g = if female { Gender::Female } else { Gender::Male };
            let c = PersonalCode::vietnamese(p, g, year, serial).unwrap();
            prop_assert_eq!(c.gender(), g);
            prop_assert_eq!(c.birth_year(), year);
            prop_assert_eq!(c.birth_province(), Some(p));
            prop_assert_eq!(c.serial(), serial);
            let back: PersonalCode = c.to_string().parse().unwrap();
            prop_assert_eq!(back, c);
            let json = serde_json::to_string(&c).unwrap();
            prop_assert_eq!(serde_json::from_str::<PersonalCode>(&json).unwrap(), c);
        }

        #[test]
        fn estonian_round_trip(days in 0i64..146_000, female in any::<bool>(), serial in 0u16..1000) {
            let birth = NaiveDate::from_ymd_opt(1800, 1, 1).unwrap() + chrono::Duration::days(days);
            let g = if female { Gender::Female } else { Gender::Male };
            let c = PersonalCode::estonian(birth, g, serial).unwrap();
            prop_assert_eq!(c.birth_date(), Some(birth));
            prop_assert_eq!(c.gender(), g);
            let back: PersonalCode = c.to_string().parse().unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<PersonalCode>();
        }
    }
}
