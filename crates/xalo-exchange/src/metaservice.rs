//! X-Road's REST metaservices (PR-MREST): `listClients` answered by the client's gateway
//! from the global configuration (at `/r1/{instance}/listClients`, and at `/listClients`
//! as PR-META has it, in JSON or XML); `listMethods`, `allowedMethods` and `getOpenAPI`
//! answered by the provider's gateway from its service registry, signed like any answer.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use xalo_core::{ClientId, ServiceId, SubsystemId};

use crate::gateway::GatewayState;
use crate::global_conf::GlobalConf;
use crate::protocol_error::{Kind, ProtocolError};
use crate::spool::Spooled;

pub const LIST_CLIENTS: &str = "listClients";
pub const LIST_METHODS: &str = "listMethods";
pub const ALLOWED_METHODS: &str = "allowedMethods";
pub const GET_OPENAPI: &str = "getOpenAPI";

/// `GET /r1/{instance}/listClients`, or `None` for any other path.
pub fn client_side(
    gw: &Arc<GatewayState>,
    method: &Method,
    path: &str,
) -> Result<Option<Response>, ProtocolError> {
    let Some(rest) = path.strip_prefix("/r1/") else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [instance, LIST_CLIENTS] = parts.as_slice() else {
        return Ok(None);
    };
    if method != Method::GET {
        return Err(ProtocolError::new(
            Kind::BadRequest,
            "listClients is called with GET",
        ));
    }
    let conf = gw.conf.get().map_err(|e| ProtocolError::client(&e))?;
    check_instance(&conf, instance)?;
    Ok(Some(clients_json(&conf)))
}

/// `GET /listClients[?xRoadInstance=INSTANCE]`, where PR-META (2) has it: JSON to a caller
/// that accepts `application/json`, else the `clientList` XML of its Annex A.
pub async fn list_clients(
    axum::extract::State(gw): axum::extract::State<Arc<GatewayState>>,
    req: axum::extract::Request,
) -> Response {
    let seen = crate::refusal::RequestSeen::of(&req);
    match list_clients_answer(&gw, &req) {
        Ok(r) => r,
        Err(e) => crate::refusal::refuse(&gw, "client", &seen, e).await,
    }
}

#[derive(serde::Deserialize)]
struct ListClientsQuery {
    #[serde(rename = "xRoadInstance")]
    x_road_instance: Option<String>,
}

fn list_clients_answer(
    gw: &GatewayState,
    req: &axum::extract::Request,
) -> Result<Response, ProtocolError> {
    if req.method() != Method::GET {
        return Err(ProtocolError::new(
            Kind::BadRequest,
            "listClients is called with GET",
        ));
    }
    let query = axum::extract::Query::<ListClientsQuery>::try_from_uri(req.uri())
        .map_err(|e| ProtocolError::new(Kind::BadRequest, format!("listClients: {e}")))?;
    let conf = gw.conf.get().map_err(|e| ProtocolError::client(&e))?;
    if let Some(instance) = &query.x_road_instance {
        check_instance(&conf, instance)?;
    }
    // XML unless JSON is asked for (PR-META 2).
    let accepted = crate::protocol_error::Accepted::of(req.headers().get_all(header::ACCEPT));
    let mut r = if accepted.asks_for_json() {
        clients_json(&conf)
    } else {
        clients_xml(&conf)
    };
    // The answer's type followed the caller's Accept.
    r.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    Ok(r)
}

#[derive(serde::Deserialize)]
struct OpenApiQuery {
    #[serde(rename = "serviceCode")]
    service_code: Option<String>,
}

/// Only this gateway's own instance is listed (no federation).
fn check_instance(conf: &GlobalConf, instance: &str) -> Result<(), ProtocolError> {
    if instance == conf.instance {
        return Ok(());
    }
    Err(ProtocolError::new(
        Kind::BadRequest,
        format!(
            "this gateway belongs to instance {}, not {instance}",
            conf.instance
        ),
    ))
}

/// Every member and subsystem of the global configuration, with the member's name.
fn clients(conf: &GlobalConf) -> Vec<(&xalo_core::MemberId, Option<&str>, &str)> {
    let mut out = Vec::new();
    for m in &conf.members {
        out.push((&m.id, None, m.name.as_str()));
        for s in &m.subsystems {
            out.push((&m.id, Some(s.as_str()), m.name.as_str()));
        }
    }
    out
}

fn clients_json(conf: &GlobalConf) -> Response {
    let members: Vec<Value> = clients(conf)
        .into_iter()
        .map(|(id, subsystem, name)| {
            let mut client = json!({"xroad_instance": id.instance(), "member_class": id.class(),
                "member_code": id.code(), "object_type": "MEMBER"});
            if let Some(s) = subsystem {
                client["subsystem_code"] = s.into();
                client["object_type"] = "SUBSYSTEM".into();
            }
            json!({"id": client, "name": name})
        })
        .collect();
    let mut r = axum::Json(json!({ "member": members })).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    r
}

/// PR-META's `clientList` (Annex A, with the identifiers as its Annex C writes them).
fn clients_xml(conf: &GlobalConf) -> Response {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xroad:clientList \
         xmlns:xroad=\"http://x-road.eu/xsd/xroad.xsd\" \
         xmlns:id=\"http://x-road.eu/xsd/identifiers\">",
    );
    for (id, subsystem, name) in clients(conf) {
        let kind = if subsystem.is_some() {
            "SUBSYSTEM"
        } else {
            "MEMBER"
        };
        xml.push_str(&format!(
            "<xroad:member><xroad:id id:objectType=\"{kind}\"><id:xRoadInstance>{}</id:xRoadInstance>\
             <id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
            crate::protocol_error::xml_text(id.instance()),
            crate::protocol_error::xml_text(id.class()),
            crate::protocol_error::xml_text(id.code())
        ));
        if let Some(s) = subsystem {
            xml.push_str(&format!(
                "<id:subsystemCode>{}</id:subsystemCode>",
                crate::protocol_error::xml_text(s)
            ));
        }
        xml.push_str(&format!(
            "</xroad:id><xroad:name>{}</xroad:name></xroad:member>",
            crate::protocol_error::xml_text(name)
        ));
    }
    xml.push_str("</xroad:clientList>\n");
    let mut r = xml.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=utf-8"),
    );
    r
}

fn service_json(
    id: &ServiceId,
    described: bool,
    endpoints: &[crate::access_right::Endpoint],
) -> Value {
    let p = id.provider();
    json!({
        "xroad_instance": p.member().instance(),
        "member_class": p.member().class(),
        "member_code": p.member().code(),
        "subsystem_code": p.code(),
        "service_code": id.code(),
        "object_type": "SERVICE",
        "service_type": if described { "OPENAPI" } else { "REST" },
        "endpoint_list": endpoints,
    })
}

/// What a gateway's own answers say they are, with their encoding (PR-REST 4.3).
const JSON_UTF8: &str = "application/json;charset=utf-8";

fn answer(body: Value) -> (StatusCode, HeaderMap, Spooled) {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    (
        StatusCode::OK,
        h,
        Spooled::from_bytes(Bytes::from(body.to_string())),
    )
}

/// Answer a metaservice addressed to one of this gateway's subsystems, or `None` when the
/// service is an ordinary one.
pub async fn provider_side(
    gw: &GatewayState,
    conf: &GlobalConf,
    client: &ClientId,
    service: &ServiceId,
    query: Option<&str>,
) -> Result<Option<(StatusCode, HeaderMap, Spooled)>, ProtocolError> {
    let code = service.code();
    if ![LIST_METHODS, ALLOWED_METHODS, GET_OPENAPI].contains(&code) {
        return Ok(None);
    }
    let db = |e: xalo_core::Error| ProtocolError::server(&e);
    let provider: &SubsystemId = service.provider();
    if code == GET_OPENAPI {
        // Percent-decoded (`get%3Dall` is `get=all`); a `+` is itself, an identifier's
        // character, not a form's space.
        let query = query.unwrap_or_default().replace('+', "%2B");
        let wanted = axum::http::Uri::try_from(format!("/?{query}"))
            .ok()
            .and_then(|uri| axum::extract::Query::<OpenApiQuery>::try_from_uri(&uri).ok())
            .and_then(|q| q.0.service_code)
            .ok_or_else(|| {
                ProtocolError::new(Kind::BadRequest, "getOpenAPI needs ?serviceCode=")
            })?;
        let id = provider
            .service(&wanted, None)
            .map_err(|e| ProtocolError::new(Kind::BadRequest, e.to_string()))?;
        let svc = gw.registry.service(&id).await.map_err(db)?.ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerUnknownService,
                format!("{id} is not registered"),
            )
        })?;
        let doc = svc.openapi.as_deref().ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerUnknownService,
                format!("{id} has no OpenAPI description"),
            )
        })?;
        let doc: Value = serde_json::from_str(doc)
            .map_err(|e| ProtocolError::new(Kind::ServerInternalError, e.to_string()))?;
        return Ok(Some(answer(doc)));
    }
    let groups = conf.groups_of(client);
    let mut out = Vec::new();
    for id in gw.registry.services(Some(provider)).await.map_err(db)? {
        let Some(svc) = gw.registry.service(&id).await.map_err(db)? else {
            continue;
        };
        if code == ALLOWED_METHODS {
            let rights = gw.registry.rights(&id).await.map_err(db)?;
            let mine = rights.granted_to(client, &groups);
            if mine.is_empty() {
                continue;
            }
            // The endpoints this client may call, as X-Road lists them: those its
            // description declares that a right covers. Where it declares none (no
            // OpenAPI) or a right covers none of them, the rights themselves, but for the
            // whole service's `* **`, which names no endpoint.
            let whole = crate::access_right::Endpoint::all();
            let mut endpoints: Vec<_> = svc
                .endpoints
                .iter()
                .filter(|e| mine.iter().any(|r| r.endpoint.matches(&e.method, &e.path)))
                .cloned()
                .collect();
            if endpoints.is_empty() {
                for r in &mine {
                    if r.endpoint != whole && !endpoints.contains(&r.endpoint) {
                        endpoints.push(r.endpoint.clone());
                    }
                }
            }
            out.push(service_json(&id, svc.openapi.is_some(), &endpoints));
        } else {
            out.push(service_json(&id, svc.openapi.is_some(), &svc.endpoints));
        }
    }
    Ok(Some(answer(json!({ "service": out }))))
}
