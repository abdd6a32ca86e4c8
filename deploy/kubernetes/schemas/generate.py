"""Writes the JSON Schemas in this folder for the custom resources the manifests use.

Hand-written from each CRD's documented fields (cert-manager v1, Prometheus Operator
monitoring.coreos.com/v1, trust-manager trust.cert-manager.io/v1alpha1, spire-controller-manager
spire.spiffe.io/v1alpha1, approver-policy policy.cert-manager.io/v1alpha1): every field of the
spec we could need, types and enums, and
additionalProperties false, so a misspelt or misplaced field fails as kubernetes-validate --strict
fails it for built-in kinds. Nested objects we never write (acme, vault, tlsConfig, ...) are only
checked to be objects. Run: python3 deploy/kubernetes/schemas/generate.py; commit the JSON.
"""
import json
import os

OUT = os.path.dirname(os.path.abspath(__file__))

def obj(props, required=(), extra=False, desc=None):
    o = {"type": "object", "properties": props, "additionalProperties": extra}
    if required: o["required"] = list(required)
    if desc: o["description"] = desc
    return o
S = {"type": "string"}
B = {"type": "boolean"}
I = {"type": "integer"}
strs = {"type": "array", "items": S}
smap = {"type": "object", "additionalProperties": S}
dur = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
promdur = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
label_selector = obj({
    "matchLabels": smap,
    "matchExpressions": {"type": "array", "items": obj({"key": S, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]}, "values": strs}, ["key", "operator"])},
})
metadata = obj({
    "name": S, "namespace": S, "labels": smap, "annotations": smap,
    "generateName": S,
}, ["name"], desc="ObjectMeta, the fields a manifest may set")
def top(api_version, kind, spec, namespaced=True, required_spec=True, kustomize_namespace=False):
    md = json.loads(json.dumps(metadata))
    if kustomize_namespace:
        # Cluster-scoped, but kustomize does not know this kind and gives it the overlay's
        # namespace; the API server drops a namespace on a cluster-scoped object.
        md["description"] += "; cluster-scoped: a namespace set by kustomize is dropped by the API server"
    elif not namespaced:
        md["properties"].pop("namespace")
        md["description"] += "; cluster-scoped, so no namespace"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{kind} ({api_version})",
        "type": "object",
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": md, "spec": spec},
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if required_spec else []),
        "additionalProperties": False,
    }
secret_key_selector = obj({"name": S, "key": S, "optional": B}, ["key"])
issuer_ref = obj({"name": S, "kind": S, "group": S}, ["name"])

certificate = top("cert-manager.io/v1", "Certificate", obj({
    "subject": obj({k: strs for k in ["organizations", "countries", "organizationalUnits", "localities", "provinces", "streetAddresses", "postalCodes"]} | {"serialNumber": S}),
    "literalSubject": S,
    "commonName": {"type": "string", "maxLength": 64},
    "duration": dur,
    "renewBefore": dur,
    "renewBeforePercentage": I,
    "dnsNames": strs,
    "ipAddresses": strs,
    "uris": strs,
    "emailAddresses": strs,
    "otherNames": {"type": "array", "items": obj({"oid": S, "utf8Value": S})},
    "secretName": S,
    "secretTemplate": obj({"annotations": smap, "labels": smap}),
    "keystores": {"type": "object"},
    "issuerRef": issuer_ref,
    "isCA": B,
    "usages": {"type": "array", "items": {"enum": [
        "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
        "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
        "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
        "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
    "privateKey": obj({
        "rotationPolicy": {"enum": ["Never", "Always"]},
        "encoding": {"enum": ["PKCS1", "PKCS8"]},
        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
        "size": I,
    }),
    "signatureAlgorithm": S,
    "encodeUsagesInRequest": B,
    "revisionHistoryLimit": {"type": "integer", "minimum": 1},
    "additionalOutputFormats": {"type": "array", "items": obj({"type": {"enum": ["DER", "CombinedPEM"]}}, ["type"])},
    "nameConstraints": {"type": "object"},
}, ["issuerRef", "secretName"]))

issuer_spec = obj({
    "selfSigned": obj({"crlDistributionPoints": strs}),
    "ca": obj({"secretName": S, "crlDistributionPoints": strs, "issuingCertificateURLs": strs, "ocspServers": strs}, ["secretName"]),
    "acme": {"type": "object"}, "vault": {"type": "object"}, "venafi": {"type": "object"},
})
issuer_spec["minProperties"] = 1
issuer_spec["maxProperties"] = 1
issuer = top("cert-manager.io/v1", "Issuer", issuer_spec)
cluster_issuer = top("cert-manager.io/v1", "ClusterIssuer", issuer_spec, namespaced=False)

relabel = obj({"sourceLabels": strs, "separator": S, "targetLabel": S, "regex": S, "modulus": I, "replacement": S,
               "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]}})
endpoint = obj({
    "port": S, "targetPort": {"type": ["string", "integer"]}, "path": S, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "params": {"type": "object", "additionalProperties": strs}, "interval": promdur, "scrapeTimeout": promdur,
    "honorLabels": B, "honorTimestamps": B, "trackTimestampsStaleness": B, "filterRunning": B, "followRedirects": B, "enableHttp2": B,
    "proxyUrl": S, "tlsConfig": {"type": "object"}, "bearerTokenSecret": secret_key_selector, "authorization": {"type": "object"},
    "basicAuth": {"type": "object"}, "oauth2": {"type": "object"},
    "metricRelabelings": {"type": "array", "items": relabel}, "relabelings": {"type": "array", "items": relabel},
})
service_monitor = top("monitoring.coreos.com/v1", "ServiceMonitor", obj({
    "jobLabel": S, "targetLabels": strs, "podTargetLabels": strs,
    "endpoints": {"type": "array", "items": endpoint},
    "selector": label_selector,
    "selectorMechanism": {"enum": ["RelabelConfig", "RoleSelector"]},
    "namespaceSelector": obj({"any": B, "matchNames": strs}),
    "sampleLimit": I, "targetLimit": I, "labelLimit": I, "labelNameLengthLimit": I, "labelValueLengthLimit": I,
    "keepDroppedTargets": I, "bodySizeLimit": S, "scrapeClass": S, "scrapeProtocols": strs, "fallbackScrapeProtocol": S,
    "attachMetadata": obj({"node": B}),
}, ["selector"]))

rule = obj({
    "record": S, "alert": S,
    "expr": {"type": ["string", "integer"], "minLength": 1},
    "for": promdur, "keep_firing_for": promdur,
    "labels": smap, "annotations": smap,
}, ["expr"])
rule["oneOf"] = [{"required": ["record"], "not": {"required": ["alert"]}}, {"required": ["alert"], "not": {"required": ["record"]}}]
prometheus_rule = top("monitoring.coreos.com/v1", "PrometheusRule", obj({
    "groups": {"type": "array", "items": obj({
        "name": {"type": "string", "minLength": 1}, "interval": promdur, "query_offset": promdur, "limit": I,
        "partial_response_strategy": S, "labels": smap,
        "rules": {"type": "array", "items": rule},
    }, ["name"])},
}))

source_ref = obj({"name": S, "key": S, "selector": label_selector, "includeAllKeys": B})
source = obj({"configMap": source_ref, "secret": source_ref, "inLine": S, "useDefaultCAs": B})
source["minProperties"] = 1
source["maxProperties"] = 1
target_ref = obj({"key": S, "metadata": obj({"annotations": smap, "labels": smap})}, ["key"])
bundle = top("trust.cert-manager.io/v1alpha1", "Bundle", obj({
    "sources": {"type": "array", "items": source, "minItems": 1},
    "target": obj({
        "configMap": target_ref, "secret": target_ref,
        "additionalFormats": {"type": "object"},
        "namespaceSelector": label_selector,
    }),
}, ["sources", "target"]), namespaced=False)

cluster_spiffeid = top("spire.spiffe.io/v1alpha1", "ClusterSPIFFEID", obj({
    "spiffeIDTemplate": S, "className": S, "hint": S,
    "podSelector": label_selector, "namespaceSelector": label_selector,
    "workloadSelectorTemplates": strs, "dnsNameTemplates": strs, "autoPopulateDNSNames": B,
    "federatesWith": strs, "ttl": dur, "jwtTtl": dur, "admin": B, "downstream": B, "fallback": B,
}, ["spiffeIDTemplate"]), namespaced=False)

# approver-policy policy.cert-manager.io/v1alpha1 CertificateRequestPolicy (cluster-scoped), from
# the CRD in cert-manager/approver-policy (deploy/crds/policy.cert-manager.io_certificaterequestpolicies.yaml,
# controller-gen v0.21.0): spec.allowed, spec.constraints, spec.plugins and spec.selector with
# every field of that CRD; spec.selector is required there too.
cel_rules = {"type": "array", "items": obj({"rule": S, "message": S}, ["rule"])}
crp_one = obj({"value": S, "required": B, "validations": cel_rules})     # single-valued attributes
crp_many = obj({"values": strs, "required": B, "validations": cel_rules})  # multi-valued attributes
key_usages = {"type": "array", "items": {"enum": [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}}
certificate_request_policy = top("policy.cert-manager.io/v1alpha1", "CertificateRequestPolicy", obj({
    "allowed": obj({
        "commonName": crp_one,
        "dnsNames": crp_many,
        "emailAddresses": crp_many,
        "ipAddresses": crp_many,
        "uris": crp_many,
        "isCA": B,
        "usages": key_usages,
        "subject": obj({k: crp_many for k in ["countries", "localities", "organizationalUnits", "organizations",
                                              "postalCodes", "provinces", "streetAddresses"]} | {"serialNumber": crp_one}),
    }),
    "constraints": obj({
        "minDuration": S,
        "maxDuration": S,
        "privateKey": obj({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "minSize": I, "maxSize": I}),
    }),
    "plugins": {"type": "object", "additionalProperties": obj({"values": smap})},
    "selector": obj({
        "issuerRef": obj({"name": S, "kind": S, "group": S}),
        "namespace": obj({"matchNames": strs, "matchLabels": smap}),
    }),
}, ["selector"]), namespaced=False, kustomize_namespace=True)

files = {
    "certificate_cert-manager.io_v1.json": certificate,
    "issuer_cert-manager.io_v1.json": issuer,
    "clusterissuer_cert-manager.io_v1.json": cluster_issuer,
    "servicemonitor_monitoring.coreos.com_v1.json": service_monitor,
    "prometheusrule_monitoring.coreos.com_v1.json": prometheus_rule,
    "bundle_trust.cert-manager.io_v1alpha1.json": bundle,
    "clusterspiffeid_spire.spiffe.io_v1alpha1.json": cluster_spiffeid,
    "certificaterequestpolicy_policy.cert-manager.io_v1alpha1.json": certificate_request_policy,
}
os.makedirs(OUT, exist_ok=True)
for name, s in files.items():
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(s, f, indent=2, ensure_ascii=False)
        f.write("\n")
print("wrote", len(files))
