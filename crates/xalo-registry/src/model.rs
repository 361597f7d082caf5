//! What the registers hold: people and enterprises.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xalo_core::{Error, ErrorCode, Gender, PersonalCode};

/// A person in the population register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub code: PersonalCode,
    pub family_name: String,
    pub middle_name: String,
    pub given_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub gender: Gender,
    /// Administrative unit (5-digit code) of the place of birth.
    pub birth_place: String,
    /// ISO 3166 alpha-2, `VN` for citizens.
    pub nationality: String,
    /// Permanent residence: unit code and street address within it.
    pub residence_unit: String,
    pub residence_address: String,
    pub temporary_residence_unit: Option<String>,
    pub father: Option<PersonalCode>,
    pub mother: Option<PersonalCode>,
    pub spouse: Option<PersonalCode>,
    pub alive: bool,
    pub death_date: Option<String>,
}

impl Person {
    /// "Nguyễn Văn An": family, middle and given names as Vietnamese write them.
    pub fn full_name(&self) -> String {
        [&self.family_name, &self.middle_name, &self.given_name]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A Vietnamese enterprise code: the 10-digit tax identification number, whose last digit
/// checks the first nine (weights 31, 29, 23, 19, 17, 13, 7, 5, 3; modulo 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaxCode(u64);

const TAX_WEIGHTS: [u64; 9] = [31, 29, 23, 19, 17, 13, 7, 5, 3];

impl TaxCode {
    /// The check digit of nine digits, or `None` when they give 10 (such numbers are
    /// never issued).
    pub fn check_digit(first9: u64) -> Option<u64> {
        let mut n = first9;
        let mut digits = [0u64; 9];
        for d in digits.iter_mut().rev() {
            *d = n % 10;
            n /= 10;
        }
        let sum: u64 = digits.iter().zip(TAX_WEIGHTS).map(|(d, w)| d * w).sum();
        let check = 10 - (sum % 11);
        (check < 10).then_some(check)
    }

    /// The code for nine leading digits, if they have a check digit.
    pub fn from_first9(first9: u64) -> Option<TaxCode> {
        Self::check_digit(first9).map(|c| TaxCode(first9 * 10 + c))
    }
}

impl FromStr for TaxCode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            |why: &str| Error::new(ErrorCode::RegistryTaxCode, format!("tax code {s:?}: {why}"));
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected 10 digits"));
        }
        let n: u64 = s.parse().map_err(|_| bad("not a number"))?;
        match Self::check_digit(n / 10) {
            Some(c) if c == n % 10 => Ok(TaxCode(n)),
            _ => Err(bad("bad check digit")),
        }
    }
}

impl fmt::Display for TaxCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

impl Serialize for TaxCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaxCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The legal forms of the Law on Enterprises 2020.
pub const LEGAL_FORMS: &[&str] = &[
    "Công ty TNHH một thành viên",
    "Công ty TNHH hai thành viên trở lên",
    "Công ty cổ phần",
    "Công ty hợp danh",
    "Doanh nghiệp tư nhân",
];

/// An enterprise in the business register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enterprise {
    pub code: TaxCode,
    pub name: String,
    pub foreign_name: Option<String>,
    /// Head office: unit code and street address.
    pub unit: String,
    pub address: String,
    pub legal_form: String,
    /// In đồng.
    pub charter_capital: i64,
    /// VSIC 2018 codes of the business lines, the main one first.
    pub business_lines: Vec<String>,
    pub representative: PersonalCode,
    pub founders: Vec<PersonalCode>,
    /// `active`, `suspended` or `dissolved`.
    pub status: String,
    pub registered_on: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_codes() {
        // 0100109106: a well-known ten-digit code whose check digit follows the rule.
        let c: TaxCode = "0100109106".parse().unwrap();
        assert_eq!(c.to_string(), "0100109106");
        assert_eq!(
            "0100109107".parse::<TaxCode>().unwrap_err().code,
            ErrorCode::RegistryTaxCode
        );
        assert!("01001091".parse::<TaxCode>().is_err());
        for n in 10_000_000..10_000_200u64 {
            if let Some(c) = TaxCode::from_first9(n) {
                assert_eq!(c.to_string().parse::<TaxCode>().unwrap(), c);
            }
        }
    }
}
