//! The Azure Blob Storage half of `remote`: a `: .cache az://container/prefix` store's account
//! and credentials from the standard Azure environment ([`AzureAccess::from_env`]), and the
//! `object_store` client over the container ([`azure_store`]). Everything the tier does with
//! the container (streaming, conditional create, multipart as Put Block + Put Block List) is
//! `object`'s, shared with S3.
//!
//! - **Endpoint.** `: .cache-endpoint` (else `AZURE_STORAGE_ENDPOINT`, else
//!   `https://ACCOUNT.blob.core.windows.net`) is the blob service URL; for Azurite it carries
//!   the account as its path (`http://127.0.0.1:10000/devstoreaccount1`), path style.
//! - **Secrets.** The account key and the SAS token are never printed: [`AzureCredential`]'s
//!   `Debug` redacts them and no error quotes them.

use std::io;

use base64::Engine;
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::RetryConfig;

use super::remote::{Connector, RemoteConfig};

/// The storage account of an `az://` store and how acr signs in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureAccess {
    /// `AZURE_STORAGE_ACCOUNT_NAME`.
    pub account: String,
    pub credential: AzureCredential,
}

/// How requests to the account are authorised.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// The account key (`AZURE_STORAGE_ACCOUNT_KEY`), base64: requests are SharedKey-signed.
    Key(String),
    /// A SAS token (`AZURE_STORAGE_SAS_TOKEN`), the query string without its `?`.
    Sas(String),
    /// Neither: `object_store` finds one itself (workload identity with `AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE`, a service principal, or the
    /// managed identity of the VM or pod).
    Ambient,
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AzureCredential::Key(_) => "Key(<redacted>)",
            AzureCredential::Sas(_) => "Sas(<redacted>)",
            AzureCredential::Ambient => "Ambient",
        })
    }
}

impl AzureAccess {
    /// The account and credential the environment names: `AZURE_STORAGE_ACCOUNT_NAME`
    /// (required), then `AZURE_STORAGE_ACCOUNT_KEY` (or its alias `AZURE_STORAGE_ACCESS_KEY`)
    /// or else `AZURE_STORAGE_SAS_TOKEN` (or `AZURE_STORAGE_SAS_KEY`); with neither, an
    /// ambient identity. `env` gives a variable's non-empty value.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<AzureAccess, String> {
        let account = env("AZURE_STORAGE_ACCOUNT_NAME").ok_or(
            "an az:// cache needs the storage account: set AZURE_STORAGE_ACCOUNT_NAME \
             (and AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN)",
        )?;
        check_account_name(&account)?;
        let key = env("AZURE_STORAGE_ACCOUNT_KEY").or_else(|| env("AZURE_STORAGE_ACCESS_KEY"));
        let sas = env("AZURE_STORAGE_SAS_TOKEN").or_else(|| env("AZURE_STORAGE_SAS_KEY"));
        let credential = match (key, sas) {
            (Some(key), _) => {
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| "AZURE_STORAGE_ACCOUNT_KEY is not base64 (copy the key of the storage account as it is shown)".to_string())?;
                AzureCredential::Key(key.trim().to_string())
            }
            (None, Some(sas)) => {
                let sas = sas.trim().trim_start_matches('?').to_string();
                if !sas.split('&').any(|pair| pair.starts_with("sig=")) {
                    return Err("AZURE_STORAGE_SAS_TOKEN has no signature (`sig=`): give the whole SAS query string".into());
                }
                AzureCredential::Sas(sas)
            }
            (None, None) => AzureCredential::Ambient,
        };
        Ok(AzureAccess {
            account,
            credential,
        })
    }
}

/// A storage account name: 3 to 24 lowercase letters and digits.
fn check_account_name(account: &str) -> Result<(), String> {
    let valid = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "AZURE_STORAGE_ACCOUNT_NAME '{account}' is not a storage account name (3 to 24 lowercase letters and digits)"
        ))
    }
}

/// A container name: 3 to 63 lowercase letters, digits and single hyphens, starting and
/// ending with a letter or digit.
pub(super) fn check_container_name(container: &str) -> Result<(), String> {
    let bytes = container.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && !container.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{container}' is not a valid container name (3 to 63 lowercase letters, digits and single hyphens)"
        ))
    }
}

/// The container `config` names, reached through our own HTTP client.
pub(super) fn azure_store(
    config: &RemoteConfig,
    access: &AzureAccess,
    client: Connector,
    retry: RetryConfig,
) -> io::Result<MicrosoftAzure> {
    // `from_env` picks up the ambient identities (workload identity, service principal, the
    // managed identity's endpoint); the explicit settings below win.
    let endpoint = match &config.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => format!("https://{}.blob.core.windows.net", access.account),
    };
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_use_emulator(false)
        .with_account(&access.account)
        .with_container_name(&config.bucket)
        .with_endpoint(endpoint)
        .with_allow_http(config.allow_http)
        .with_retry(retry)
        .with_http_connector(client);
    match &access.credential {
        AzureCredential::Key(key) => builder = builder.with_access_key(key),
        AzureCredential::Sas(sas) => builder = builder.with_config(AzureConfigKey::SasKey, sas),
        AzureCredential::Ambient => {}
    }
    // The builder's errors name what is wrong (an unparsable endpoint), never a secret.
    builder
        .build()
        .map_err(|e| io::Error::other(format!("Azure Blob configure: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn account_and_credential_come_from_the_environment() {
        let keyed = AzureAccess::from_env(&env_of(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x"),
        ]))
        .unwrap();
        assert_eq!(keyed.account, "devstoreaccount1");
        assert_eq!(keyed.credential, AzureCredential::Key(KEY.into()));
        assert!(
            !format!("{keyed:?}").contains("Eby8"),
            "the key is not printed"
        );

        let sas = AzureAccess::from_env(&env_of(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            (
                "AZURE_STORAGE_SAS_TOKEN",
                "?sv=2022-11-02&sp=rwdl&sig=c2lnbmF0dXJl",
            ),
        ]))
        .unwrap();
        assert_eq!(
            sas.credential,
            AzureCredential::Sas("sv=2022-11-02&sp=rwdl&sig=c2lnbmF0dXJl".into())
        );
        assert!(
            !format!("{sas:?}").contains("sig="),
            "the SAS is not printed"
        );

        let ambient =
            AzureAccess::from_env(&env_of(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct")])).unwrap();
        assert_eq!(ambient.credential, AzureCredential::Ambient);
    }

    #[test]
    fn a_missing_account_or_a_malformed_secret_is_an_error_that_quotes_no_secret() {
        let none = AzureAccess::from_env(&env_of(&[("AZURE_STORAGE_ACCOUNT_KEY", KEY)]));
        assert!(none.unwrap_err().contains("AZURE_STORAGE_ACCOUNT_NAME"));
        let upper = AzureAccess::from_env(&env_of(&[("AZURE_STORAGE_ACCOUNT_NAME", "Acct")]));
        assert!(upper.unwrap_err().contains("not a storage account name"));
        let bad_key = AzureAccess::from_env(&env_of(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "not base64 at all!"),
        ]))
        .unwrap_err();
        assert!(bad_key.contains("not base64") && !bad_key.contains("at all"));
        let bad_sas = AzureAccess::from_env(&env_of(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=1&secretpart"),
        ]))
        .unwrap_err();
        assert!(bad_sas.contains("sig=") && !bad_sas.contains("secretpart"));
    }

    #[test]
    fn container_names_follow_azure_rules() {
        for good in ["cache", "acr-cache-1", "abc"] {
            assert!(check_container_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab", "Cache", "-cache", "cache-", "ca--che", "ca_che", "ca.che",
        ] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
    }
}
