use super::*;

fn load(src: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billrun.toml");
    if src.contains("[seller]") {
        std::fs::write(&path, src).unwrap();
    } else {
        std::fs::write(&path, format!("{src}{EXAMPLE_SELLER}")).unwrap();
    }
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(Some(&path), |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .map_err(|e| e.to_string())
}

#[test]
fn file_then_environment() {
    let c = load(
        "timezone = \"America/Toronto\"\nchunk_size = 10\n",
        &[("BILLRUN_CHUNK_SIZE", "20")],
    )
    .unwrap();
    assert_eq!((c.timezone.as_str(), c.chunk_size), ("America/Toronto", 20));
}

#[test]
fn the_seller_is_required_and_checked() {
    let e = load("timezone = \"UTC\"\n[seller]\n", &[]).unwrap_err();
    assert!(e.contains("missing field `legal_name`"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billrun.toml");
    std::fs::write(&path, "timezone = \"UTC\"\n").unwrap();
    let c = Config::load(Some(&path), |_| None).unwrap();
    let e = c.seller().unwrap_err().to_string();
    assert!(e.contains("[seller] is missing"), "{e}");
    let e = load(
        &EXAMPLE_SELLER.replace("country = \"GB\"", "country = \"Britain\""),
        &[],
    )
    .unwrap_err();
    assert!(
        e.contains("seller.country \"Britain\" is not an ISO 3166"),
        "{e}"
    );
    let c = load("", &[]).unwrap();
    assert_eq!(c.seller.unwrap().legal_name, "Example Software Ltd");
}

#[test]
fn names_the_bad_key() {
    let e = load("timezone = \"UTC\"\nchunk = 5\n", &[]).unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("unknown field `chunk`"),
        "{e}"
    );
    let e = load("chunk_size = \"many\"\n", &[]).unwrap_err();
    assert!(e.contains("line 1"), "{e}");
    let e = load("timezone = \"Mars/Olympus\"\n", &[]).unwrap_err();
    assert!(e.contains("timezone"), "{e}");
    let e = load("", &[("BILLRUN_CHUNK_SIZE", "x")]).unwrap_err();
    assert!(e.contains("BILLRUN_CHUNK_SIZE"), "{e}");
    let e = load(
        "[modules]\nreports = [{ table = \"rows; DROP TABLE x\", account_column = \"a\" }]\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.contains("modules.reports") && e.contains("not a plain SQL identifier"),
        "{e}"
    );
    let e = load(
        "[modules]\nreports = [{ table = \"documents\", account_column = \"account_id\" }]\n",
        &[],
    )
    .unwrap_err();
    assert!(e.contains("billrun's own tables"), "{e}");
    let c = load(
        "",
        &[
            ("BILLRUN_SMTP_PASSWORD", "hunter2"),
            ("BILLRUN_DATABASE_URL", "postgres://u:pw2@h/db"),
        ],
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("pw2"),
        "{shown}"
    );
    let e = load("", &[("BILLRUN_DATABASE_URL", "mysql://u:pw@h/db")]).unwrap_err();
    assert!(e.contains("database_url") && !e.contains("pw"), "{e}");
}

#[test]
fn sanity_bounds() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.sanity_bounds(), SanityBounds::default());
    assert_eq!(
        (
            c.sanity_max_documents_per_subscription,
            c.sanity_max_increase
        ),
        (12, Decimal::TEN)
    );
    let c = load(
        "sanity_max_documents_per_subscription = 24\nsanity_max_increase = \"2.5\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.sanity_bounds(),
        SanityBounds {
            max_documents_per_subscription: 24,
            max_increase: Decimal::new(25, 1),
            max_invoice: MaxInvoice::default(),
        }
    );
    let c = load(
        "[sanity_max_invoice]\ndefault = 0\nJPY = \"500000000\"\n",
        &[],
    )
    .unwrap();
    let usd = Currency::new("USD").unwrap();
    let jpy = Currency::new("JPY").unwrap();
    assert_eq!(
        c.sanity_bounds().max_invoice.for_currency(usd),
        Decimal::ZERO
    );
    assert_eq!(
        c.sanity_bounds().max_invoice.for_currency(jpy),
        Decimal::from(500_000_000)
    );
    let c = load("", &[("BILLRUN_SANITY_MAX_INVOICE", "USD=100,default=5")]).unwrap();
    assert_eq!(
        c.sanity_bounds().max_invoice.for_currency(usd),
        Decimal::from(100)
    );
    assert_eq!(
        c.sanity_bounds().max_invoice.for_currency(jpy),
        Decimal::from(5)
    );
    let e = load("[sanity_max_invoice]\nusd = 5\n", &[]).unwrap_err();
    assert!(
        e.contains("sanity_max_invoice") && e.contains("\"usd\""),
        "{e}"
    );
    let c = load(
        "sanity_max_increase = 20\n",
        &[
            ("BILLRUN_SANITY_MAX_INCREASE", "0"),
            ("BILLRUN_SANITY_MAX_DOCUMENTS_PER_SUBSCRIPTION", "0"),
            ("BILLRUN_SANITY_MAX_INVOICE", "0"),
        ],
    )
    .unwrap();
    assert_eq!(c.sanity_bounds(), SanityBounds::NONE);
    for (src, env, want) in [
        ("sanity_max_increase = 2.5\n", None, "line 1"),
        ("sanity_max_increase = 2.5\n", None, "not as a float"),
        (
            "sanity_max_increase = \"-1\"\n",
            None,
            "must be 0 (no limit) or at least 1",
        ),
        (
            "sanity_max_increase = \"0.5\"\n",
            None,
            "sanity_max_increase",
        ),
        (
            "sanity_max_increase = \"ten\"\n",
            None,
            "not a decimal number",
        ),
        (
            "",
            Some(("BILLRUN_SANITY_MAX_INCREASE", "x")),
            "BILLRUN_SANITY_MAX_INCREASE",
        ),
        (
            "sanity_max_documents_per_subscription = -1\n",
            None,
            "line 1",
        ),
        (
            "",
            Some(("BILLRUN_SANITY_MAX_DOCUMENTS_PER_SUBSCRIPTION", "many")),
            "not a whole number",
        ),
        (
            "sanity_max_documents_per_subscription = 100000\n",
            None,
            "not a plausible limit",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let e = load(src, &env).unwrap_err();
        assert!(e.contains(want), "{src:?} {env:?}: {e}");
    }
}

#[test]
fn owned_tables_are_never_module_data() {
    for t in ["parked_accounts", "parked_events", "close_claims"] {
        let e = load(
            &format!(
                "[modules]\nreports = [{{ table = \"{t}\", account_column = \"account_id\" }}]\n"
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("billrun's own tables"), "{e}");
    }
    let e = load("", &[("BILLRUN_DATABASE_URL", "mysql://u:pw@h/db")]).unwrap_err();
    assert!(e.contains("database_url") && !e.contains("pw"), "{e}");
}

#[test]
fn smtp_connections_is_1_to_64() {
    assert_eq!(load("", &[]).unwrap().smtp_connections, 4);
    assert_eq!(
        load("smtp_connections = 16\n", &[])
            .unwrap()
            .smtp_connections,
        16
    );
    assert_eq!(
        load("", &[("BILLRUN_SMTP_CONNECTIONS", "64")])
            .unwrap()
            .smtp_connections,
        64
    );
    for (src, env) in [
        ("smtp_connections = 0\n", None),
        ("smtp_connections = 65\n", None),
        ("", Some("0")),
        ("", Some("1000")),
    ] {
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|v| ("BILLRUN_SMTP_CONNECTIONS", *v))
            .collect();
        let e = load(src, &env).unwrap_err();
        assert!(
            e.contains("smtp_connections") && e.contains("between 1 and 64"),
            "{src}{env:?}: {e}"
        );
    }
    let e = load("smtp_connections = -1\n", &[]).unwrap_err();
    assert!(e.contains("line 1") && e.contains("-1"), "{e}");
    let e = load("", &[("BILLRUN_SMTP_CONNECTIONS", "four")]).unwrap_err();
    assert!(e.contains("BILLRUN_SMTP_CONNECTIONS"), "{e}");
}

#[test]
fn the_password_file_is_read_and_its_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smtp-password");
    std::fs::write(&file, "s3cret pass \n").unwrap();
    let mut config = Config {
        smtp_url: Some("smtps://mail.example.com".into()),
        smtp_user: Some("billing".into()),
        smtp_password_file: Some(file.display().to_string()),
        ..Default::default()
    };
    let s = config.smtp_settings().unwrap().unwrap();
    assert_eq!(
        s.password,
        Some(crate::mail::smtp::Secret::new("s3cret pass "))
    );
    config.smtp_password = Some("other".into());
    assert!(config.smtp_settings().is_err());
    config.smtp_password = None;
    std::fs::write(&file, "\n").unwrap();
    assert!(config.smtp_settings().is_err());
    config.smtp_url = None;
    assert!(config.smtp_settings().unwrap().is_none());
}

#[test]
fn the_url_must_be_smtp() {
    let e = load("smtp_url = \"http://u:pw-9@mail.example.com\"\n", &[]).unwrap_err();
    assert!(e.contains("smtp_url") && !e.contains("pw-9"), "{e}");
    let c = load("", &[("BILLRUN_SMTP_PASSWORD_FILE", "/run/secrets/smtp")]).unwrap();
    assert_eq!(c.smtp_password_file.as_deref(), Some("/run/secrets/smtp"));
}

/// A self-signed CA (P-256, valid until 2126), only ever parsed here.
const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBpDCCAUugAwIBAgIUamnCxyPgiXjxQtAF67CR0uTIJi8wCgYIKoZIzj0EAwIw\n\
HzEdMBsGA1UEAwwUYmlsbHJ1biB1bml0LXRlc3QgQ0EwIBcNMjYxMjAyMDUzOTUy\n\
WhgPMjEyNjExMDgwNTM5NTJaMB8xHTAbBgNVBAMMFGJpbGxydW4gdW5pdC10ZXN0\n\
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMcUx9BskyMPkk0jq1XpYRLr6\n\
quHuNmePvZFJvo84ODisv2KU6nTrRzchEzgyTxWdkuvmjjSsXZ0Z43tsLwX78KNj\n\
MGEwHQYDVR0OBBYEFEcSj6dVhZp1gLIlpiclFGqC6v9JMB8GA1UdIwQYMBaAFEcS\n\
j6dVhZp1gLIlpiclFGqC6v9JMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQD\n\
AgEGMAoGCCqGSM49BAMCA0cAMEQCIGSHcQmOKDFcsD3DeDmyYzkm9UshwNYZTcK1\n\
8P7p1DgoAiBq7+7gC5FPLO4M4DCbusNKiyKeU4quRM+PItroOlWJmA==\n\
-----END CERTIFICATE-----\n\
";

#[test]
fn smtp_ca_file_must_hold_a_usable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let with_ca_file =
        |ca: &std::path::Path| load("", &[("BILLRUN_SMTP_CA_FILE", &ca.display().to_string())]);
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, format!("# the relay's CA\n{TEST_CA}")).unwrap();
    let c = with_ca_file(&good).unwrap();
    assert_eq!(c.smtp_ca_file, Some(good.display().to_string()));

    for (name, content, why) in [
        ("missing.pem", None, "cannot read"),
        ("empty.pem", Some(""), "holds no PEM certificate"),
        (
            "key.pem",
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            "holds no PEM certificate",
        ),
        (
            "garbled.pem",
            Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            "not a valid PEM",
        ),
        (
            "not-der.pem",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "cannot be used as a CA",
        ),
    ] {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let e = with_ca_file(&path).unwrap_err();
        assert!(
            e.contains("smtp_ca_file") && e.contains(name) && e.contains(why),
            "{name}: {e}"
        );
    }

    // Used for both TLS modes; refused where there is no TLS to use it for.
    let with_ca = |url: &str| {
        let config = Config {
            smtp_url: Some(url.into()),
            smtp_user: Some("billing".into()),
            smtp_password: Some("pw-ca-1".into()),
            smtp_ca_file: Some(good.display().to_string()),
            ..Default::default()
        };
        config.transport().map(drop)
    };
    with_ca("smtps://mail.example.com:465").unwrap();
    with_ca("smtp://mail.example.com:587?tls=required").unwrap();
    let e = with_ca("smtp://127.0.0.1:25").unwrap_err().to_string();
    assert!(
        e.contains("smtp_ca_file") && e.contains("no TLS") && !e.contains("pw-ca-1"),
        "{e}"
    );
}
