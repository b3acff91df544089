//! The two parties an invoice names (SPEC §11): the seller, from the configuration, and the
//! customer, from the account — copied onto each document when it is issued, so a document
//! keeps naming the customer as they were on its issue date (and after their account data is
//! deleted, as tax law keeps invoices for years).
//!
//! Reverse charge: a business customer in another VAT area accounts for the VAT itself, so
//! its documents carry no tax lines and say so with both tax IDs.

use super::limits;
use serde::{Deserialize, Serialize};

/// The note every reverse-charge document carries, word for word (SPEC §11).
pub const REVERSE_CHARGE_NOTE: &str = "Reverse charge: the customer accounts for the VAT.";

/// Address lines a party may have, and their length.
pub const MAX_ADDRESS_LINES: usize = 6;

/// An ISO 3166-1 alpha-2 country code: two upper-case ASCII letters.
pub fn check_country(code: &str) -> Result<(), String> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "country {code:?} is not an ISO 3166 alpha-2 code (two upper-case letters, e.g. \"DE\")"
        ))
    }
}

/// A tax ID as a tax office writes it: 2 to 32 letters, digits, spaces, dots or dashes.
pub fn check_tax_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '/');
    if (2..=32).contains(&id.len())
        && id.chars().all(ok_char)
        && id.chars().any(|c| c.is_ascii_alphanumeric())
    {
        Ok(())
    } else {
        Err(format!(
            "tax ID {id:?} must be 2-32 letters, digits, spaces, dots, slashes or dashes"
        ))
    }
}

/// Address lines: at most [`MAX_ADDRESS_LINES`], each non-empty, within the name length, and
/// free of control characters (they are printed on documents and in mail).
pub fn check_address(lines: &[String]) -> Result<(), String> {
    if lines.len() > MAX_ADDRESS_LINES {
        return Err(format!(
            "address has {} lines; at most {MAX_ADDRESS_LINES}",
            lines.len()
        ));
    }
    for line in lines {
        check_text("address line", line)?;
    }
    Ok(())
}

/// One line of printed text: non-empty, within [`limits::MAX_NAME_CHARS`], no control
/// characters.
pub fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.chars().count() > limits::MAX_NAME_CHARS {
        return Err(format!(
            "{what} is longer than {} characters",
            limits::MAX_NAME_CHARS
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} {s:?} contains a control character"));
    }
    Ok(())
}

/// Who issues the documents: `[seller]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    pub legal_name: String,
    pub address: Vec<String>,
    pub country: String,
    #[serde(default)]
    pub tax_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Free text printed under the totals: bank details, a payment link.
    #[serde(default)]
    pub payment_instructions: Option<String>,
}

impl Seller {
    /// Every field as SPEC §11 requires it; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        check_text("seller.legal_name", &self.legal_name)?;
        if self.address.is_empty() {
            return Err("seller.address needs at least one line".into());
        }
        check_address(&self.address).map_err(|e| format!("seller.{e}"))?;
        check_country(&self.country).map_err(|e| format!("seller.{e}"))?;
        if let Some(id) = &self.tax_id {
            check_tax_id(id).map_err(|e| format!("seller.{e}"))?;
        }
        if let Some(email) = &self.email {
            check_text("seller.email", email)?;
            if !email.contains('@') {
                return Err(format!("seller.email {email:?} is not an email address"));
            }
        }
        if let Some(p) = &self.payment_instructions {
            if p.chars().count() > 2000 {
                return Err("seller.payment_instructions is longer than 2000 characters".into());
            }
            if p.chars().any(|c| c.is_control() && c != '\n') {
                return Err("seller.payment_instructions contains a control character".into());
            }
        }
        Ok(())
    }
}

/// What a party is besides its name: address, country, tax ID, reverse charge. An account
/// stores it as one JSON value (the `accounts.identity` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse_charge: bool,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        *self == Identity::default()
    }

    /// The rule of SPEC §11 checked wherever a customer enters (import, scenarios): reverse
    /// charge needs the customer's tax ID, since the document must print it.
    pub fn check(&self) -> Result<(), String> {
        check_address(&self.address)?;
        if let Some(c) = &self.country {
            check_country(c)?;
        }
        if let Some(id) = &self.tax_id {
            check_tax_id(id)?;
        }
        if self.reverse_charge && self.tax_id.is_none() {
            return Err("reverse_charge needs the customer's tax_id".into());
        }
        Ok(())
    }
}

/// The customer as a document names them: the account's name and identity, copied at issue
/// time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    #[serde(flatten)]
    pub identity: Identity,
}

/// A customer reads as its identity (`customer.tax_id`), named.
impl std::ops::Deref for Customer {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// The seller of the tests.
#[cfg(test)]
pub(crate) fn example_seller() -> Seller {
    Seller {
        legal_name: "Example Software Ltd".into(),
        address: vec!["1 Example Street".into(), "London EC1A 1AA".into()],
        country: "GB".into(),
        tax_id: Some("GB123456789".into()),
        email: Some("billing@example.com".into()),
        payment_instructions: Some("IBAN GB33 BUKB 2020 1555 5555 55".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seller() -> Seller {
        example_seller()
    }

    #[test]
    fn a_complete_seller_passes_and_each_fault_is_named() {
        assert_eq!(seller().check(), Ok(()));
        type Spoil = fn(&mut Seller);
        let cases: &[(Spoil, &str)] = &[
            (|s| s.legal_name = " ".into(), "seller.legal_name is empty"),
            (
                |s| s.address.clear(),
                "seller.address needs at least one line",
            ),
            (
                |s| s.country = "de".into(),
                "seller.country \"de\" is not an ISO 3166",
            ),
            (
                |s| s.tax_id = Some("x".into()),
                "seller.tax ID \"x\" must be",
            ),
            (|s| s.email = Some("nobody".into()), "not an email address"),
            (
                |s| s.address = vec!["a\u{1b}[2J".into()],
                "seller.address line \"a\\u{1b}[2J\" contains a control character",
            ),
        ];
        for (spoil, expected) in cases {
            let mut s = seller();
            spoil(&mut s);
            let err = s.check().unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn reverse_charge_needs_a_tax_id() {
        let mut c = Identity {
            reverse_charge: true,
            ..Identity::default()
        };
        assert_eq!(
            c.check(),
            Err("reverse_charge needs the customer's tax_id".into())
        );
        c.tax_id = Some("FR12345678901".into());
        assert_eq!(c.check(), Ok(()));
    }
}
