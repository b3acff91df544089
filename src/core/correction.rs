//! Corrections of what was issued (SPEC §10), as pure rules: voiding an invoice with a credit
//! note that negates it line by line, a partial credit note of a net amount with the
//! invoice's taxes on it, and one-off charges — on the next invoice, or invoiced at once. The shell loads the invoice and the credit notes already issued
//! against it, and writes the credit note this returns — with its number, ledger entry or
//! refund, outbox message and audit record — in one transaction.

use super::billing::{AccountState, Terms};
use super::document::{
    Document, DocumentBuilder, DocumentKind, DraftDocument, Line, LineKind, apply_balance,
};
use super::domain::{AccountStatus, Subscription, SubscriptionStatus};
use super::money::{self, AmountOverflow};
use chrono::NaiveDate;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionRefusal {
    #[error("{0} is a credit note; only invoices are voided or credited")]
    NotAnInvoice(String),
    #[error("invoice {invoice} is already voided by {credit_note}")]
    AlreadyVoided {
        invoice: String,
        credit_note: String,
    },
    #[error(
        "invoice {invoice} already has credit note {credit_note} against it: credit the rest instead of voiding"
    )]
    HasCreditNotes {
        invoice: String,
        credit_note: String,
    },
    #[error("the amount to credit must be above zero, not {0}")]
    AmountNotPositive(Decimal),
    #[error("{0} is not in whole minor units of {1}")]
    NotWholeMinorUnits(Decimal, String),
    #[error(
        "crediting {amount} would bring the credit notes against {invoice} to {total}, above its net {net}"
    )]
    AboveInvoice {
        invoice: String,
        amount: Decimal,
        total: Decimal,
        net: Decimal,
    },
    #[error("a reason is required")]
    NoReason,
    #[error("a description is required")]
    NoDescription,
    #[error("account {0} is canceled; it is charged nothing more")]
    AccountCanceled(String),
    #[error("account {account} has no subscription {subscription:?}")]
    UnknownSubscription {
        account: String,
        subscription: String,
    },
    #[error("subscription {0} has ended")]
    SubscriptionEnded(String),
    #[error(
        "account {0} has no active subscription whose next invoice could carry the charge; use --now"
    )]
    NoActiveSubscription(String),
    #[error(transparent)]
    Overflow(#[from] AmountOverflow),
}

/// Why the credit notes already issued against an invoice forbid a void; checks a reason.
fn check_correctable(
    invoice: &Document,
    earlier: &[&Document],
    reason: &str,
) -> Result<(), CorrectionRefusal> {
    if invoice.draft.kind != DocumentKind::Invoice {
        return Err(CorrectionRefusal::NotAnInvoice(invoice.number.clone()));
    }
    if reason.trim().is_empty() {
        return Err(CorrectionRefusal::NoReason);
    }
    if let Some(void) = earlier.iter().find(|d| d.draft.key.starts_with("void/")) {
        return Err(CorrectionRefusal::AlreadyVoided {
            invoice: invoice.number.clone(),
            credit_note: void.number.clone(),
        });
    }
    Ok(())
}

/// A credit note against `invoice`, dated `at`, from its lines.
fn credit_note(
    invoice: &Document,
    key: String,
    at: NaiveDate,
    lines: Vec<Line>,
    reason: &str,
) -> Result<DraftDocument, AmountOverflow> {
    let d = &invoice.draft;
    let cur = d.currency;
    let sum = |kinds: &[LineKind]| {
        money::sum(
            lines
                .iter()
                .filter(|l| kinds.contains(&l.kind))
                .map(|l| l.amount),
            "credit note",
        )
    };
    let discount = sum(&[LineKind::Discount])?;
    let tax = sum(&[LineKind::Tax])?;
    let total = money::sum(lines.iter().map(|l| l.amount), "credit note total")?;
    let subtotal = money::sub(
        money::sub(total, tax, "credit note")?,
        discount,
        "credit note",
    )?;
    Ok(DraftDocument {
        key,
        kind: DocumentKind::CreditNote,
        account: d.account.clone(),
        customer: d.customer.clone(),
        corrects: Some(invoice.number.clone()),
        reason: Some(reason.trim().to_string()),
        subscription: d.subscription.clone(),
        issued_at: at,
        due_at: at,
        period: d.period,
        currency: cur,
        lines,
        subtotal: cur.round(subtotal),
        discount: cur.round(discount),
        tax: cur.round(tax),
        total: cur.round(total),
        credit_applied: cur.zero(),
        amount_due: cur.zero(),
        consumes_pending: Vec::new(),
    })
}

/// Void `invoice` in full (SPEC §10): a credit note with every line of the invoice negated —
/// charges, proration, pending items, discount, each tax line — so its total is minus the
/// invoice's. Refused for a credit note, an invoice already voided, or one that already has
/// a credit note against it (`earlier`: the credit notes against it).
pub fn plan_void(
    invoice: &Document,
    earlier: &[&Document],
    at: NaiveDate,
    reason: &str,
) -> Result<DraftDocument, CorrectionRefusal> {
    check_correctable(invoice, earlier, reason)?;
    if let Some(cn) = earlier.first() {
        return Err(CorrectionRefusal::HasCreditNotes {
            invoice: invoice.number.clone(),
            credit_note: cn.number.clone(),
        });
    }
    let lines = invoice
        .draft
        .lines
        .iter()
        .map(|l| Line {
            amount: -l.amount,
            unit_price: l.unit_price.map(|p| -p),
            ..l.clone()
        })
        .collect();
    Ok(credit_note(
        invoice,
        format!("void/{}", invoice.number),
        at,
        lines,
        reason,
    )?)
}

/// A partial credit of `net` (before tax) against `invoice` (SPEC §10): one line
/// "Credit: REASON" of −net, then one tax line per rate of the invoice, each computed on
/// −net and rounded half away from zero. Refused when `net` ≤ 0, or when it and the nets of
/// the credit notes already against the invoice (`earlier`) would exceed the invoice's net.
pub fn plan_credit(
    invoice: &Document,
    earlier: &[&Document],
    net: Decimal,
    at: NaiveDate,
    reason: &str,
) -> Result<DraftDocument, CorrectionRefusal> {
    check_correctable(invoice, earlier, reason)?;
    let d = &invoice.draft;
    let cur = d.currency;
    if net <= Decimal::ZERO {
        return Err(CorrectionRefusal::AmountNotPositive(net));
    }
    if !cur.is_whole_minor(net) {
        return Err(CorrectionRefusal::NotWholeMinorUnits(net, cur.to_string()));
    }
    let credited = money::sum(earlier.iter().map(|c| -c.draft.net()), "credited")?;
    let total = money::add(credited, net, "credited")?;
    if total > d.net() {
        return Err(CorrectionRefusal::AboveInvoice {
            invoice: invoice.number.clone(),
            amount: net,
            total,
            net: d.net(),
        });
    }
    let mut lines = vec![Line::amount(
        LineKind::Credit,
        format!("Credit: {}", reason.trim()),
        cur.round(-net),
        false,
    )];
    for l in d.lines.iter().filter(|l| l.kind == LineKind::Tax) {
        // Invoices issued before rates were kept on their tax lines carry the rate only in
        // the description; such a line is credited in the invoice's own proportion.
        let amount = match &l.tax {
            Some(rate) => money::mul(-net, rate.percent, "tax")? / Decimal::ONE_HUNDRED,
            None if !d.net().is_zero() => money::mul(-net, l.amount, "tax")? / d.net(),
            None => Decimal::ZERO,
        };
        lines.push(Line {
            amount: cur.round(amount),
            ..l.clone()
        });
    }
    let key = format!("credit/{}/{}", invoice.number, earlier.len() + 1);
    Ok(credit_note(invoice, key, at, lines, reason)?)
}

/// What every charge is checked for: an active account, a positive amount in whole minor
/// units, a description.
fn check_charge(
    state: &AccountState,
    net: Decimal,
    description: &str,
) -> Result<(), CorrectionRefusal> {
    let account = &state.account;
    if account.status != AccountStatus::Active {
        return Err(CorrectionRefusal::AccountCanceled(account.id.to_string()));
    }
    if net <= Decimal::ZERO {
        return Err(CorrectionRefusal::AmountNotPositive(net));
    }
    if !account.currency.is_whole_minor(net) {
        return Err(CorrectionRefusal::NotWholeMinorUnits(
            net,
            account.currency.to_string(),
        ));
    }
    if description.trim().is_empty() {
        return Err(CorrectionRefusal::NoDescription);
    }
    Ok(())
}

/// The subscription whose next invoice carries a one-off charge (SPEC §10): the one named, or
/// the account's active subscription renewing first (ties by subscription id).
pub fn plan_charge_later<'a>(
    state: &'a AccountState,
    net: Decimal,
    description: &str,
    named: Option<&str>,
) -> Result<&'a Subscription, CorrectionRefusal> {
    check_charge(state, net, description)?;
    let account = state.account.id.to_string();
    match named {
        Some(id) => {
            let sub = state
                .subscriptions
                .iter()
                .find(|s| s.id.as_str() == id)
                .ok_or_else(|| CorrectionRefusal::UnknownSubscription {
                    account: account.clone(),
                    subscription: id.to_string(),
                })?;
            if sub.status != SubscriptionStatus::Active || sub.cancel_at.is_some() {
                return Err(CorrectionRefusal::SubscriptionEnded(id.to_string()));
            }
            Ok(sub)
        }
        None => state
            .subscriptions
            .iter()
            .filter(|s| s.status == SubscriptionStatus::Active && s.cancel_at.is_none())
            .min_by(|a, b| (a.next_bill_date, &a.id).cmp(&(b.next_bill_date, &b.id)))
            .ok_or(CorrectionRefusal::NoActiveSubscription(account)),
    }
}

/// A one-off charge invoiced at once (SPEC §10, `--now`): one line of `net`, not
/// discounted, with the account's taxes, the balance applied. Returns the invoice and the
/// balance after it.
pub fn plan_charge_now(
    state: &AccountState,
    net: Decimal,
    description: &str,
    key: String,
    at: NaiveDate,
    terms: Terms,
) -> Result<(DraftDocument, Decimal), CorrectionRefusal> {
    check_charge(state, net, description)?;
    let account = &state.account;
    let mut b = DocumentBuilder::new(account.currency);
    b.line(LineKind::OneOff, description.trim(), net, false);
    let mut doc = b.finish(key, account, None, at, terms.due(at), None, None)?;
    let balance = apply_balance(&mut doc, state.balance)?;
    Ok((doc, balance))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::document::DocumentBuilder;
    use crate::core::domain::{Account, AccountId, Discount, DiscountValue, TaxRate};
    use crate::core::money::Currency;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// An invoice of 3 × 33.33 and a proration of −10.00, 10% off, GST 5% and QST 9.975%.
    fn invoice() -> Document {
        let cad = Currency::new("CAD").unwrap();
        let mut b = DocumentBuilder::new(cad);
        b.priced(LineKind::Recurring, "Pro", 3, dec("33.33"), true);
        b.line(LineKind::Proration, "Unused Basic", dec("-10.00"), true);
        let account = Account {
            taxes: vec![
                TaxRate::new("GST", dec("5")).unwrap(),
                TaxRate::new("QST", dec("9.975")).unwrap(),
            ],
            ..Account::new(AccountId::new("a1").unwrap(), "A", "a@example.com", cad)
        };
        let discount = Discount::new(DiscountValue::Percent(dec("10")), None, None).unwrap();
        let d = day("2026-02-01");
        let draft = b
            .finish(
                "renewal/s1/2026-02-01".into(),
                &account,
                None,
                d,
                d,
                None,
                Some(&discount),
            )
            .unwrap();
        Document {
            number: "INV-2026-000001".into(),
            draft,
        }
    }

    fn issued(draft: DraftDocument, number: &str) -> Document {
        Document {
            number: number.into(),
            draft,
        }
    }

    #[test]
    fn a_void_negates_every_line_and_names_what_it_corrects() {
        let inv = invoice();
        let cn = plan_void(&inv, &[], day("2026-02-10"), "wrong plan").unwrap();
        assert_eq!(cn.kind, DocumentKind::CreditNote);
        assert_eq!(cn.total, -inv.draft.total);
        assert_eq!(
            (cn.subtotal, cn.discount, cn.tax),
            (-inv.draft.subtotal, -inv.draft.discount, -inv.draft.tax)
        );
        assert_eq!(cn.lines.len(), inv.draft.lines.len());
        for (c, i) in cn.lines.iter().zip(&inv.draft.lines) {
            assert_eq!((c.kind, c.amount), (i.kind, -i.amount));
        }
        assert_eq!(cn.total, cn.lines.iter().map(|l| l.amount).sum::<Decimal>());
        assert_eq!(cn.corrects.as_deref(), Some("INV-2026-000001"));
        assert_eq!(cn.reason.as_deref(), Some("wrong plan"));
        assert_eq!(cn.issued_at, day("2026-02-10"));
        assert_eq!(cn.key, "void/INV-2026-000001");
    }

    #[test]
    fn a_partial_credit_has_one_line_and_the_invoices_taxes_rounded_per_rate() {
        let inv = invoice();
        let cn = plan_credit(&inv, &[], dec("30.00"), day("2026-02-10"), "outage").unwrap();
        let lines: Vec<(&str, String)> = cn
            .lines
            .iter()
            .map(|l| (l.description.as_str(), l.amount.to_string()))
            .collect();
        // −30.00 × 5% = −1.50; −30.00 × 9.975% = −2.9925 → −2.99.
        assert_eq!(
            lines,
            [
                ("Credit: outage", "-30.00".to_string()),
                ("GST 5%", "-1.50".into()),
                ("QST 9.975%", "-2.99".into())
            ]
        );
        assert_eq!(cn.total, dec("-34.49"));
        assert_eq!(cn.net(), dec("-30.00"));
        assert_eq!(cn.key, "credit/INV-2026-000001/1");
    }

    #[test]
    fn credits_never_exceed_the_invoices_net() {
        let inv = invoice();
        // Net: 99.99 − 10.00 = 89.99, less 10% = 80.99.
        assert_eq!(inv.draft.net(), dec("80.99"));
        let first = issued(
            plan_credit(&inv, &[], dec("50.00"), day("2026-02-10"), "outage").unwrap(),
            "CN-2026-000001",
        );
        let err =
            plan_credit(&inv, &[&first], dec("31.00"), day("2026-02-11"), "more").unwrap_err();
        assert_eq!(
            err.to_string(),
            "crediting 31.00 would bring the credit notes against INV-2026-000001 to 81.00, above its net 80.99"
        );
        let rest = plan_credit(&inv, &[&first], dec("30.99"), day("2026-02-11"), "rest").unwrap();
        assert_eq!(rest.key, "credit/INV-2026-000001/2");
        for (amount, want) in [
            ("0", "the amount to credit must be above zero, not 0"),
            (
                "-5.00",
                "the amount to credit must be above zero, not -5.00",
            ),
            ("1.001", "1.001 is not in whole minor units of CAD"),
        ] {
            let e = plan_credit(&inv, &[], dec(amount), day("2026-02-10"), "x").unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn a_void_is_refused_after_any_credit_note_and_for_credit_notes() {
        let inv = invoice();
        let credit = issued(
            plan_credit(&inv, &[], dec("10.00"), day("2026-02-10"), "outage").unwrap(),
            "CN-2026-000001",
        );
        let e = plan_void(&inv, &[&credit], day("2026-02-11"), "wrong").unwrap_err();
        assert!(matches!(e, CorrectionRefusal::HasCreditNotes { .. }), "{e}");
        let void = issued(
            plan_void(&inv, &[], day("2026-02-10"), "wrong").unwrap(),
            "CN-2026-000002",
        );
        let e = plan_void(&inv, &[&void], day("2026-02-11"), "again").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invoice INV-2026-000001 is already voided by CN-2026-000002"
        );
        let e = plan_credit(&inv, &[&void], dec("1.00"), day("2026-02-11"), "x").unwrap_err();
        assert!(matches!(e, CorrectionRefusal::AlreadyVoided { .. }), "{e}");
        let e = plan_void(&void, &[], day("2026-02-11"), "x").unwrap_err();
        assert_eq!(e, CorrectionRefusal::NotAnInvoice("CN-2026-000002".into()));
        let e = plan_void(&inv, &[], day("2026-02-11"), "  ").unwrap_err();
        assert_eq!(e, CorrectionRefusal::NoReason);
    }
}
