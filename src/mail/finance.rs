//! What finance books from (SPEC §11): `documents.csv` (one row per document), `lines.csv`
//! (one row per line, so tax per rate and revenue per plan can be summed) and `refunds.csv`
//! (balances owed back), which the finance batch email (`batch`) carries. The same files come out of `billrun export` and `close --dry-run --out`.
//!
//! RFC 4180 quoting (the csv crate), UTF-8, amounts as plain decimals with the currency's
//! minor digits, dates ISO 8601. Values are written exactly as stored — finance matches on
//! them — and the attachments are base64, the one encoding every byte survives.

use super::MailError;
use crate::core::document::{Document, RefundOwed};
use crate::core::money::Currency;
use rust_decimal::Decimal;

pub const DOCUMENTS_CSV: &str = "documents.csv";
pub const LINES_CSV: &str = "lines.csv";
pub const REFUNDS_CSV: &str = "refunds.csv";

const DOCUMENT_COLUMNS: [&str; 18] = [
    "number",
    "kind",
    "corrects",
    "account",
    "customer_name",
    "customer_tax_id",
    "country",
    "subscription",
    "issue_date",
    "due_date",
    "period_start",
    "period_end",
    "currency",
    "net",
    "tax",
    "total",
    "credit_applied",
    "amount_due",
];

const LINE_COLUMNS: [&str; 9] = [
    "number",
    "position",
    "kind",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "tax_name",
    "tax_rate",
];

const REFUND_COLUMNS: [&str; 5] = ["account", "customer_name", "currency", "amount", "reason"];

/// The files of a batch or an export: name and content. `refunds.csv` only when there are
/// refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinanceFiles {
    pub files: Vec<(&'static str, String)>,
}

fn csv_error(e: impl std::fmt::Display) -> MailError {
    MailError::Build(format!("CSV: {e}"))
}

/// An amount as finance reads it: the currency's minor digits, always.
fn amount(cur: Currency, x: Decimal) -> String {
    cur.round(x).to_string()
}

fn write_csv<const N: usize>(
    columns: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> Result<String, MailError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(columns).map_err(csv_error)?;
    for row in rows {
        w.write_record(&row).map_err(csv_error)?;
    }
    let bytes = w.into_inner().map_err(csv_error)?;
    String::from_utf8(bytes).map_err(csv_error)
}

/// A document's row of `documents.csv`.
fn document_row(doc: &Document) -> [String; DOCUMENT_COLUMNS.len()] {
    let d = &doc.draft;
    let cur = d.currency;
    [
        doc.number.clone(),
        d.kind.as_str().into(),
        d.corrects.clone().unwrap_or_default(),
        d.account.to_string(),
        d.customer.name.clone(),
        d.customer.tax_id.clone().unwrap_or_default(),
        d.customer.country.clone().unwrap_or_default(),
        d.subscription
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        d.issued_at.to_string(),
        d.due_at.to_string(),
        d.period.map(|p| p.start.to_string()).unwrap_or_default(),
        d.period.map(|p| p.end.to_string()).unwrap_or_default(),
        cur.to_string(),
        amount(cur, d.net()),
        amount(cur, d.tax),
        amount(cur, d.total),
        amount(cur, d.credit_applied),
        amount(cur, d.amount_due),
    ]
}

/// A document's rows of `lines.csv`.
fn line_rows(doc: &Document) -> impl Iterator<Item = [String; LINE_COLUMNS.len()]> + '_ {
    let cur = doc.draft.currency;
    doc.draft.lines.iter().enumerate().map(move |(i, l)| {
        [
            doc.number.clone(),
            (i + 1).to_string(),
            l.kind.finance_kind().into(),
            l.description.clone(),
            l.quantity.map(|q| q.to_string()).unwrap_or_default(),
            l.unit_price.map(|p| cur.price(p)).unwrap_or_default(),
            amount(cur, l.amount),
            l.tax.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
            l.tax
                .as_ref()
                .map(|t| t.percent.normalize().to_string())
                .unwrap_or_default(),
        ]
    })
}

/// A refund's row of `refunds.csv`.
fn refund_row(r: &RefundOwed) -> [String; REFUND_COLUMNS.len()] {
    let shown = Currency::new(&r.currency)
        .map(|c| amount(c, r.amount))
        .unwrap_or_else(|_| r.amount.to_string());
    [
        r.account.clone(),
        r.customer_name.clone(),
        r.currency.clone(),
        shown,
        r.reason.clone(),
    ]
}

/// `documents.csv`, `lines.csv` and (when there are any) `refunds.csv`.
pub fn finance_files(
    docs: &[&Document],
    refunds: &[RefundOwed],
) -> Result<FinanceFiles, MailError> {
    let documents = write_csv(DOCUMENT_COLUMNS, docs.iter().map(|d| document_row(d)))?;
    let lines = write_csv(LINE_COLUMNS, docs.iter().flat_map(|d| line_rows(d)))?;
    let mut files = vec![(DOCUMENTS_CSV, documents), (LINES_CSV, lines)];
    if !refunds.is_empty() {
        files.push((
            REFUNDS_CSV,
            write_csv(REFUND_COLUMNS, refunds.iter().map(refund_row))?,
        ));
    }
    Ok(FinanceFiles { files })
}

/// A file of the finance set being written: under a temporary name, readable by its owner
/// only, until `finish` renames it.
fn private_tmp(dir: &std::path::Path, name: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(format!(".{name}.tmp")))
}

/// The same files as [`finance_files`], written page by page into a folder (an export of any
/// size in bounded memory), each whole or not at all.
pub struct FinanceFilesWriter {
    dir: std::path::PathBuf,
    documents: csv::Writer<std::fs::File>,
    lines: csv::Writer<std::fs::File>,
}

impl FinanceFilesWriter {
    /// Start the files in `dir` (created if missing), with their header rows.
    pub fn create(dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut documents = csv::Writer::from_writer(private_tmp(dir, DOCUMENTS_CSV)?);
        documents.write_record(DOCUMENT_COLUMNS)?;
        let mut lines = csv::Writer::from_writer(private_tmp(dir, LINES_CSV)?);
        lines.write_record(LINE_COLUMNS)?;
        Ok(FinanceFilesWriter {
            dir: dir.to_path_buf(),
            documents,
            lines,
        })
    }

    /// Add documents' rows.
    pub fn append(&mut self, docs: &[&Document]) -> std::io::Result<()> {
        for doc in docs {
            self.documents.write_record(document_row(doc))?;
            for row in line_rows(doc) {
                self.lines.write_record(&row)?;
            }
        }
        Ok(())
    }

    /// Write `refunds.csv` if there are refunds, sync every file and give each its name.
    /// Returns the paths written.
    pub fn finish(self, refunds: &[RefundOwed]) -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut done = vec![
            (
                DOCUMENTS_CSV,
                self.documents.into_inner().map_err(|e| e.into_error())?,
            ),
            (
                LINES_CSV,
                self.lines.into_inner().map_err(|e| e.into_error())?,
            ),
        ];
        if !refunds.is_empty() {
            let mut w = csv::Writer::from_writer(private_tmp(&self.dir, REFUNDS_CSV)?);
            w.write_record(REFUND_COLUMNS)?;
            for r in refunds {
                w.write_record(refund_row(r))?;
            }
            done.push((REFUNDS_CSV, w.into_inner().map_err(|e| e.into_error())?));
        }
        let mut written = Vec::new();
        for (name, file) in done {
            file.sync_all()?;
            let path = self.dir.join(name);
            std::fs::rename(self.dir.join(format!(".{name}.tmp")), &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

impl FinanceFiles {
    /// Write the files into `dir` (created if missing), each whole or not at all: written
    /// under a temporary name, synced, then renamed. Readable by the owner only — they hold
    /// customers' names. Returns the paths written.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for (name, content) in &self.files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::document::{DocumentBuilder, LineKind};
    use crate::core::domain::{Account, AccountId, TaxRate};
    use crate::mail::batch::finance_summary;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    pub(crate) fn document(
        number: &str,
        name: &str,
        currency: &str,
        reverse_charge: bool,
    ) -> Document {
        let cur = Currency::new(currency).unwrap();
        let mut b = DocumentBuilder::new(cur);
        b.priced(LineKind::Recurring, "Pro, monthly", 3, dec("19.99"), true);
        b.line(LineKind::Proration, "Unused Basic", dec("-5.005"), true);
        let account = Account {
            taxes: vec![
                TaxRate::new("GST", dec("5")).unwrap(),
                TaxRate::new("QST", dec("9.975")).unwrap(),
            ],
            tax_id: Some("CA123456789RT0001".into()),
            country: Some("CA".into()),
            reverse_charge,
            ..Account::new(AccountId::new("a1").unwrap(), name, "a@example.com", cur)
        };
        let day = "2026-02-01".parse().unwrap();
        let draft = b
            .finish("k".into(), &account, None, day, day, None, None)
            .unwrap();
        Document {
            number: number.into(),
            draft,
        }
    }

    fn rows(csv: &str) -> Vec<Vec<String>> {
        csv::Reader::from_reader(csv.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn documents_and_lines_add_up_per_document_and_per_rate() {
        let a = document("INV-1", "Zoë \"Q\", Ltd", "USD", false);
        let b = document("INV-2", "Юрий", "USD", true);
        let c = document("INV-3", "Yamada", "JPY", false);
        let refunds = [RefundOwed {
            account: "a9".into(),
            customer_name: "Ωmega".into(),
            currency: "USD".into(),
            amount: dec("12.5"),
            reason: "balance of a canceled account".into(),
        }];
        let files = finance_files(&[&a, &b, &c], &refunds).unwrap().files;
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [DOCUMENTS_CSV, LINES_CSV, REFUNDS_CSV]);

        let docs = rows(&files[0].1);
        assert!(
            files[0].1.contains("\"Zoë \"\"Q\"\", Ltd\""),
            "RFC 4180 quoting"
        );
        assert_eq!(docs.len(), 3);
        // number, net, tax, total of each: 3 × 19.99 − 5.01 = 54.96 net.
        let figures: Vec<[&str; 4]> = docs
            .iter()
            .map(|r| {
                [
                    r[0].as_str(),
                    r[13].as_str(),
                    r[14].as_str(),
                    r[15].as_str(),
                ]
            })
            .collect();
        assert_eq!(
            figures,
            [
                ["INV-1", "54.96", "8.23", "63.19"],
                ["INV-2", "54.96", "0.00", "54.96"],
                ["INV-3", "55", "8", "63"],
            ]
        );

        let lines = rows(&files[1].1);
        for doc in &docs {
            let sum: Decimal = lines
                .iter()
                .filter(|l| l[0] == doc[0])
                .map(|l| dec(&l[6]))
                .sum();
            assert_eq!(
                sum,
                dec(&doc[15]),
                "lines of {} add up to its total",
                doc[0]
            );
        }
        let first: Vec<&str> = lines[0].iter().map(String::as_str).collect();
        assert_eq!(
            first,
            [
                "INV-1",
                "1",
                "charge",
                "Pro, monthly",
                "3",
                "19.99",
                "59.97",
                "",
                ""
            ]
        );
        let taxes: Vec<(&str, &str, &str)> = lines
            .iter()
            .filter(|l| l[2] == "tax")
            .map(|l| (l[0].as_str(), l[7].as_str(), l[8].as_str()))
            .collect();
        assert_eq!(
            taxes,
            [
                ("INV-1", "GST", "5"),
                ("INV-1", "QST", "9.975"),
                ("INV-3", "GST", "5"),
                ("INV-3", "QST", "9.975")
            ]
        );
        assert_eq!(
            rows(&files[2].1),
            [[
                "a9",
                "Ωmega",
                "USD",
                "12.50",
                "balance of a canceled account"
            ]]
        );

        let summary = finance_summary(&[&a, &b, &c]);
        assert!(summary.contains(
            "USD: 2 document(s); net 109.92, tax 8.23, total 118.15, credit applied 0.00, amount due 118.15"
        ), "{summary}");
        assert!(
            summary.contains("  tax GST 5%: 2.75\n  tax QST 9.975%: 5.48\n"),
            "{summary}"
        );
        assert!(
            summary.contains("JPY: 1 document(s); net 55, tax 8"),
            "{summary}"
        );
    }
}
