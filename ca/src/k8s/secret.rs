//! [`CaSecretStore`] for [`KubeApi`]: the CA certificate and key in one
//! `Opaque` Secret with Istio's `cacerts` data keys (`ca-cert.pem`,
//! `ca-key.pem`).
//!
//! Creation is race-safe between replicas: the API server accepts exactly one
//! `POST`; a loser gets `409 AlreadyExists`, reads the winner's Secret back
//! and uses that. Key bytes this module holds are wiped on drop; copies made
//! by the HTTP and JSON layers underneath are out of its reach.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use zeroize::{Zeroize, Zeroizing};

use super::client::{
    CA_CERT_KEY, CA_KEY_KEY, KubeApi, MANAGED_BY_LABEL, is_status, map_kube_error,
};
use super::{CaSecret, CaSecretStore, K8sError, SecretCreated};

impl CaSecretStore for KubeApi {
    fn load(&self) -> BoxFuture<'_, Result<Option<CaSecret>, K8sError>> {
        Box::pin(async move {
            let found = self
                .secrets()
                .get_opt(&self.ca_secret_name)
                .await
                .map_err(|e| map_kube_error("GET", &self.ca_secret_path(), e))?;
            found.map(|s| self.decode(WipeOnDrop(s))).transpose()
        })
    }

    fn create<'a>(
        &'a self,
        secret: &'a CaSecret,
    ) -> BoxFuture<'a, Result<SecretCreated, K8sError>> {
        Box::pin(async move {
            let object = WipeOnDrop(Secret {
                metadata: ObjectMeta {
                    name: Some(self.ca_secret_name.clone()),
                    namespace: Some(self.ca_secret_namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_LABEL.0.to_owned(),
                        MANAGED_BY_LABEL.1.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(BTreeMap::from([
                    (
                        CA_CERT_KEY.to_owned(),
                        ByteString(secret.cert_pem.as_bytes().to_vec()),
                    ),
                    (
                        CA_KEY_KEY.to_owned(),
                        ByteString(secret.key_pem.as_bytes().to_vec()),
                    ),
                ])),
                ..Secret::default()
            });
            match self
                .secrets()
                .create(&PostParams::default(), &object.0)
                .await
            {
                Ok(echo) => {
                    drop(WipeOnDrop(echo));
                    tracing::info!(
                        k8s.namespace = %self.ca_secret_namespace,
                        k8s.secret = %self.ca_secret_name,
                        "created the CA Secret"
                    );
                    Ok(SecretCreated::Created)
                }
                Err(e) if is_status(&e, 409) => {
                    tracing::info!(
                        k8s.namespace = %self.ca_secret_namespace,
                        k8s.secret = %self.ca_secret_name,
                        "another replica created the CA Secret first; using its content"
                    );
                    match self.load().await? {
                        Some(winner) => Ok(SecretCreated::AlreadyExists(winner)),
                        None => Err(K8sError::Api {
                            verb: "GET",
                            path: self.ca_secret_path(),
                            status: 404,
                            message: "the CA Secret was deleted right after a create conflict"
                                .to_owned(),
                        }),
                    }
                }
                Err(e) => Err(map_kube_error("POST", &self.secrets_path(), e)),
            }
        })
    }
}

impl KubeApi {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ca_secret_namespace)
    }

    fn secrets_path(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.ca_secret_namespace)
    }

    fn ca_secret_path(&self) -> String {
        format!("{}/{}", self.secrets_path(), self.ca_secret_name)
    }

    fn decode(&self, mut secret: WipeOnDrop) -> Result<CaSecret, K8sError> {
        let cert = self.take_key(&mut secret, CA_CERT_KEY)?;
        let mut key = self.take_key(&mut secret, CA_KEY_KEY)?;
        let cert_pem = String::from_utf8(cert.to_vec())
            .map_err(|_| self.decode_error(format!("{CA_CERT_KEY} is not UTF-8")))?;
        let key_pem = match String::from_utf8(std::mem::take(&mut *key)) {
            Ok(text) => Zeroizing::new(text),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                return Err(self.decode_error(format!("{CA_KEY_KEY} is not UTF-8")));
            }
        };
        Ok(CaSecret { cert_pem, key_pem })
    }

    fn take_key(&self, secret: &mut WipeOnDrop, key: &str) -> Result<Zeroizing<Vec<u8>>, K8sError> {
        secret
            .0
            .data
            .as_mut()
            .and_then(|data| data.remove(key))
            .map(|bytes| Zeroizing::new(bytes.0))
            .ok_or_else(|| self.decode_error(format!("no data key {key}")))
    }

    fn decode_error(&self, what: String) -> K8sError {
        K8sError::Decode(format!(
            "CA Secret {}/{}: {what}",
            self.ca_secret_namespace, self.ca_secret_name
        ))
    }
}

/// A Secret whose data values are wiped when it is dropped.
struct WipeOnDrop(Secret);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        for value in self.0.data.iter_mut().flat_map(|d| d.values_mut()) {
            value.0.zeroize();
        }
        for value in self.0.string_data.iter_mut().flat_map(|d| d.values_mut()) {
            value.zeroize();
        }
    }
}
