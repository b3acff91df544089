//! Invoices that name seller and customer, and the files finance books from (SPEC §11),
//! through the real binary on each backend: the PDF read back with `pdftotext`, the finance
//! batch's CSV files, `export`, `close --dry-run --out`, and the refusals.

use crate::common::{Backend, Sandbox, fixtures, snapshot};
use std::path::Path;
use std::process::Command;

/// Whether `pdftotext` (poppler-utils) is here to read PDFs back. Like the SMTP suite's
/// server, it is required with `BILLRUN_REQUIRE_SMTP=1` (CI), else its checks are skipped
/// with a line on stderr.
fn pdftotext_ready(test: &str) -> bool {
    let ok = Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("BILLRUN_REQUIRE_SMTP").as_deref() != Ok("1"),
            "BILLRUN_REQUIRE_SMTP=1 but pdftotext is missing (apt install poppler-utils)"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{test}: pdftotext not installed, the PDFs' text is not checked (apt install poppler-utils)"
        );
    }
    ok
}

/// The text of a PDF, as `pdftotext -layout` reads it.
fn pdf_text(pdf: &Path) -> String {
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) is installed; .ci/run installs it");
    assert!(out.status.success(), "pdftotext {}", pdf.display());
    String::from_utf8(out.stdout).expect("pdftotext writes UTF-8")
}

/// The attachments of an `.eml` file: (file name, decoded bytes), with Python's email
/// parser (the one the SMTP tests' server uses), so no MIME code of ours reads them back.
fn attachments(eml: &Path, out: &Path) -> Vec<std::path::PathBuf> {
    let script = "import email,sys,os\n\
        m=email.message_from_binary_file(open(sys.argv[1],'rb'))\n\
        for p in m.walk():\n\
        \x20   n=p.get_filename()\n\
        \x20   if n:\n\
        \x20       open(os.path.join(sys.argv[2],n),'wb').write(p.get_payload(decode=True)); print(n)\n";
    std::fs::create_dir_all(out).unwrap();
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(eml)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|n| out.join(n))
        .collect()
}

/// The text part of an `.eml` file, decoded.
fn batch_body(eml: &Path) -> String {
    let script = "import email,sys\n\
        m=email.message_from_binary_file(open(sys.argv[1],'rb'))\n\
        print(next(p for p in m.walk() if p.get_content_type()=='text/plain').get_payload(decode=True).decode())\n";
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(eml)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = Vec::new();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    rows.push(
        reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect(),
    );
    for r in reader.records() {
        rows.push(r.unwrap().iter().map(str::to_string).collect());
    }
    rows
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// Every document's lines add up to its total, and net + tax = total.
fn check_books(documents: &[Vec<String>], lines: &[Vec<String>]) {
    use rust_decimal::Decimal;
    let d = |s: &str| Decimal::from_str_exact(s).unwrap();
    let (num, net, tax, total) = (
        column(documents, "number"),
        column(documents, "net"),
        column(documents, "tax"),
        column(documents, "total"),
    );
    let (lnum, amount) = (column(lines, "number"), column(lines, "amount"));
    for doc in &documents[1..] {
        let sum: Decimal = lines[1..]
            .iter()
            .filter(|l| l[lnum] == doc[num])
            .map(|l| d(&l[amount]))
            .sum();
        assert_eq!(sum, d(&doc[total]), "lines of {}", doc[num]);
        assert_eq!(d(&doc[net]) + d(&doc[tax]), d(&doc[total]), "{}", doc[num]);
    }
}

fn sandbox(backend: Backend) -> Sandbox {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    sb.ok(&["import", fixtures().join("identity.json").to_str().unwrap()]);
    sb
}

on_each_backend!(invoices_name_both_parties:
    invoices_name_seller_and_customer_as_written_sqlite,
    invoices_name_seller_and_customer_as_written_postgres
);

async fn invoices_name_both_parties(backend: Backend) {
    let sb = sandbox(backend);
    sb.ok(&["close", "--as-of", "2026-01-01"]);
    let out = sb.dir.path().join("parts");
    let read_pdfs = pdftotext_ready("invoices_name_seller_and_customer_as_written");
    let mut texts = std::collections::BTreeMap::new();
    for name in sb.emails() {
        for file in attachments(&sb.mail().join(&name), &out) {
            if read_pdfs && file.extension().is_some_and(|e| e == "pdf") {
                texts.insert(name.clone(), pdf_text(&file));
            }
        }
    }
    assert_eq!(
        texts.len(),
        if read_pdfs { 2 } else { 0 },
        "{:?}",
        texts.keys()
    );
    for text in texts.values() {
        for seller in [
            "Example Software Ltd",
            "1 Example Street",
            "London EC1A 1AA",
            "GB123456789",
        ] {
            assert!(
                text.contains(seller),
                "seller's {seller:?} missing:\n{text}"
            );
        }
        assert!(text.contains("Page 1 of 1"), "{text}");
    }
    if let Some(zoe) = texts.values().find(|t| t.contains("Юрий")) {
        for written in [
            "Zoë Łukasiewicz Ωmega Юрий",
            "ul. Żółta 3",
            "00-001 Warszawa",
            "PL5260250274",
        ] {
            assert!(zoe.contains(written), "{written:?} not as written:\n{zoe}");
        }
        assert!(
            zoe.contains("Reverse charge: the customer accounts for the VAT."),
            "{zoe}"
        );
        assert!(
            !zoe.contains("VAT 23%"),
            "a tax line on a reverse-charge invoice:\n{zoe}"
        );
        let beta = texts.values().find(|t| t.contains("Beta")).unwrap();
        assert!(!beta.contains("Reverse charge"), "{beta}");
        // Three at 30.00: the quantity and unit price, then a tax line per rate with its base.
        assert!(beta.contains("30.00") && beta.contains("90.00"), "{beta}");
        assert!(
            beta.contains("GST 5% on 90.00 USD") && beta.contains("QST 9.975% on 90.00 USD"),
            "{beta}"
        );
    } else {
        assert!(!read_pdfs, "no invoice names the reverse-charge customer");
    }

    // The finance batch carries documents.csv and lines.csv that add up.
    let batch_name = sb
        .emails()
        .into_iter()
        .find(|n| n.starts_with("finance-batch"))
        .unwrap();
    let files = attachments(&sb.mail().join(&batch_name), &sb.dir.path().join("batch"));
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["documents.csv", "lines.csv"]);
    let documents = csv_rows(&files[0]);
    let lines = csv_rows(&files[1]);
    assert_eq!(
        documents[0],
        [
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
            "amount_due"
        ]
    );
    assert_eq!(
        lines[0],
        [
            "number",
            "position",
            "kind",
            "description",
            "quantity",
            "unit_price",
            "amount",
            "tax_name",
            "tax_rate"
        ]
    );
    assert_eq!(documents.len(), 3);
    // Tax per rate summed from lines.csv is what the batch body says.
    let body = batch_body(&sb.mail().join(&batch_name));
    let (kind, name, rate, amount) = (
        column(&lines, "kind"),
        column(&lines, "tax_name"),
        column(&lines, "tax_rate"),
        column(&lines, "amount"),
    );
    let mut per_rate = std::collections::BTreeMap::new();
    for l in lines[1..].iter().filter(|l| l[kind] == "tax") {
        *per_rate
            .entry((l[name].clone(), l[rate].clone()))
            .or_insert(rust_decimal::Decimal::ZERO) +=
            rust_decimal::Decimal::from_str_exact(&l[amount]).unwrap();
    }
    assert_eq!(per_rate.len(), 2);
    for ((name, rate), sum) in &per_rate {
        let line = format!("tax {name} {rate}%: {sum}");
        assert!(
            body.contains(&line),
            "{line:?} not in the batch body:\n{body}"
        );
    }
    check_books(&documents, &lines);
    let names = column(&documents, "customer_name");
    assert!(documents.iter().any(|r| r[names] == "Beta \"Quoted\", Ltd"));
    let kinds = column(&lines, "kind");
    let rates: Vec<&str> = lines[1..]
        .iter()
        .filter(|l| l[kinds] == "tax")
        .map(|l| l[column(&lines, "tax_rate")].as_str())
        .collect();
    assert_eq!(rates, ["5", "9.975"]);

    // export writes the same files for a range of issue dates.
    let export = sb.dir.path().join("export");
    sb.ok(&[
        "export",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(csv_rows(&export.join("documents.csv")), documents);
    assert_eq!(csv_rows(&export.join("lines.csv")), lines);
    let empty = sb.dir.path().join("empty");
    sb.ok(&[
        "export",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--out",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(
        csv_rows(&empty.join("documents.csv")).len(),
        1,
        "header only"
    );
}

on_each_backend!(dry_run_out:
    close_dry_run_out_writes_the_files_and_nothing_else_sqlite,
    close_dry_run_out_writes_the_files_and_nothing_else_postgres
);

async fn dry_run_out(backend: Backend) {
    let sb = sandbox(backend);
    let before = snapshot(&sb.db).await;
    // On SQLite, the database's files byte for byte as well.
    let files = |sb: &Sandbox| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(sb.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".db"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let bytes_before = files(&sb);
    let out = sb.dir.path().join("preview");
    sb.ok(&[
        "close",
        "--as-of",
        "2026-01-01",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        snapshot(&sb.db).await,
        before,
        "a dry run wrote to the database"
    );
    if backend == Backend::Sqlite {
        assert!(!bytes_before.is_empty());
        assert!(files(&sb) == bytes_before, "the SQLite files changed");
    }
    assert!(sb.emails().is_empty());
    let documents = csv_rows(&out.join("documents.csv"));
    let numbers: Vec<&str> = documents[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(numbers, ["DRAFT-000001", "DRAFT-000002"]);
    check_books(&documents, &csv_rows(&out.join("lines.csv")));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("lines.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "customer data readable by others: {mode:o}"
    );
}

on_each_backend!(refusals:
    reverse_charge_without_a_tax_id_and_a_missing_seller_are_refused_sqlite,
    reverse_charge_without_a_tax_id_and_a_missing_seller_are_refused_postgres
);

async fn refusals(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    let file = sb.dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"accounts": [{"id": "x", "email": "x@example.com", "currency": "EUR", "reverse_charge": true}]}"#,
    )
    .unwrap();
    let before = snapshot(&sb.db).await;
    let out = sb.run(&["import", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reverse_charge needs the customer's tax_id"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(snapshot(&sb.db).await, before);

    // A configuration without [seller]: commands that issue documents refuse, others run.
    let config = std::fs::read_to_string(sb.config()).unwrap();
    let cut = config
        .find("\n[seller]")
        .expect("the sandbox names a seller");
    std::fs::write(sb.config(), &config[..cut]).unwrap();
    let out = sb.run(&["close", "--as-of", "2026-01-01"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[seller] is missing"), "{err}");
    assert_eq!(snapshot(&sb.db).await, before);
    sb.ok(&["invoices"]);
}

/// A document with more lines than a page holds goes on over pages numbered "Page N of M",
/// the table header repeated, every line printed once.
#[test]
fn lines_run_over_pages_numbered_n_of_m() {
    use billrun::core::document::{Document, DocumentBuilder, LineKind};
    use billrun::core::domain::{Account, AccountId};
    use billrun::core::money::Currency;
    use rust_decimal::Decimal;
    let usd = Currency::new("USD").unwrap();
    let mut b = DocumentBuilder::new(usd);
    for i in 0..60 {
        b.priced(
            LineKind::Recurring,
            format!("Module {i:02}"),
            1,
            Decimal::new(500 + i, 2),
            true,
        );
    }
    let account = Account::new(AccountId::new("a1").unwrap(), "Юрий", "y@example.com", usd);
    let day = "2026-02-01".parse().unwrap();
    let doc = Document {
        number: "INV-2026-000001".into(),
        draft: b
            .finish("k".into(), &account, None, day, day, None, None)
            .unwrap(),
    };
    let seller: billrun::core::party::Seller =
        toml::from_str(&billrun::config::EXAMPLE_SELLER.replace("\n[seller]\n", "")).unwrap();
    let pdf = billrun::mail::document_pdf(&doc, &seller).unwrap();
    assert_eq!(pdf.replaced, 0);
    if !pdftotext_ready("lines_run_over_pages_numbered_n_of_m") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.pdf");
    std::fs::write(&path, &pdf.bytes).unwrap();
    let text = pdf_text(&path);
    // pdftotext ends each page with a form feed.
    let pages: Vec<&str> = text
        .split('\x0c')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(pages.len(), 2, "{text}");
    assert!(pages[0].contains("Page 1 of 2"), "{}", pages[0]);
    assert!(pages[1].contains("Page 2 of 2"), "{}", pages[1]);
    assert_eq!(
        text.matches("Unit price").count(),
        2,
        "the header on each page:\n{text}"
    );
    for i in 0..60 {
        assert_eq!(
            text.matches(&format!("Module {i:02}")).count(),
            1,
            "line {i}:\n{text}"
        );
    }
}

on_each_backend!(dry_run_on_an_empty_database:
    a_dry_run_on_a_database_without_a_schema_is_refused_and_creates_nothing_sqlite,
    a_dry_run_on_a_database_without_a_schema_is_refused_and_creates_nothing_postgres
);

/// A dry run opens the database read-only: it cannot migrate, so on a database without
/// billrun's schema it says what to do, in one line, and creates nothing (not even the SQLite
/// file).
async fn dry_run_on_an_empty_database(backend: Backend) {
    let sb = Sandbox::new(backend);
    let before = std::fs::read_dir(sb.dir.path()).unwrap().count();
    let out = sb.run(&["close", "--as-of", "2026-01-01", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    match backend {
        Backend::Sqlite => assert!(err.contains("does not exist"), "{err}"),
        Backend::Postgres => assert!(err.contains("run `billrun migrate`"), "{err}"),
    }
    assert_eq!(std::fs::read_dir(sb.dir.path()).unwrap().count(), before);
    // Once migrated and imported, the same dry run works.
    sb.ok(&["migrate"]);
    sb.ok(&["import", fixtures().join("identity.json").to_str().unwrap()]);
    sb.ok(&["close", "--as-of", "2026-01-01", "--dry-run"]);
}
