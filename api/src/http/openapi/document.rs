//! The OpenAPI 3.1 document, assembled from the router's own list of endpoints and the [`Doc`]
//! each one carries. What follows from an endpoint's kind is added here once: the credential's
//! 401, the 404 of an id in the path, the body's 400/413/415/422, the idempotency headers and
//! codes of a POST, the consistency headers, `Retry-After` on 429 and 503.

use std::collections::BTreeMap;

use axum::http::Method;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::ComponentsBuilder;
use utoipa::openapi::security::{HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required, Tag,
};

use super::doc::{Access, Answer, Doc};
use super::schemas::{envelope, error_schema, integer_schema, pagination_schema, string_schema, uuid_schema};
use crate::http::error::Code;
use crate::http::routes::{Endpoint, IdempotencyKeys};

/// Where the described endpoints live.
pub const PREFIX: &str = "/api/v1";

const JSON: &str = "application/json";

/// The document of every `/api/v1` endpoint that carries a [`Doc`]. Endpoints without one are
/// left out; the tests walk the router's list to see that none is.
pub fn build(endpoints: &[Endpoint]) -> OpenApi {
    let mut paths = Paths::new();
    let mut components = ComponentsBuilder::new()
        .schema("Error", error_schema())
        .schema("Pagination", pagination_schema())
        .security_scheme(
            "access_token",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from /auth/register, /auth/login or /auth/refresh."))
                    .build(),
            ),
        )
        .security_scheme(
            "api_key",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pk_...")
                    .description(Some("An API key (`pk_...`), sent as a bearer token."))
                    .build(),
            ),
        );
    let mut tags = BTreeMap::new();
    for endpoint in endpoints {
        let Some(doc) = &endpoint.doc else { continue };
        let Some(path) = endpoint.path.strip_prefix(PREFIX) else { continue };
        for (name, schema) in &doc.schemas {
            components = components.schema(name.clone(), schema.clone());
        }
        let tag = tag_of(path);
        tags.entry(tag.clone()).or_insert(());
        let links = links_from(endpoint, endpoints);
        paths.add_path_operation(
            &endpoint.path,
            vec![http_method(&endpoint.method)],
            operation(endpoint, doc, tag, &links),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Parley")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Event-sourced team chat, calls and live streams. Every success is \
                     `{success: true, data, meta}`, every error `{success: false, error, code, details}`; \
                     commands answer `meta.position` and `X-Position`, queries wait for `X-Min-Position`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(tags.into_keys().map(Tag::new)))
        .build()
}

/// The first segment after the prefix (`/admin/...` by its second): the resource.
fn tag_of(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').split('/');
    match segments.next() {
        Some("admin") => segments.next().unwrap_or("admin").to_owned(),
        Some(first) => first.to_owned(),
        None => "api".to_owned(),
    }
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// `get_conversations_id_messages` from `GET /conversations/{id}/messages`.
fn operation_id(method: &Method, path: &str) -> String {
    let words: Vec<&str> =
        path.split(['/', '{', '}', '.']).filter(|s| !s.is_empty() && *s != "api" && *s != "v1").collect();
    format!("{}_{}", method.as_str().to_lowercase(), words.join("_"))
}

/// What a creation leads to: from `POST /things` answering 201 with `data.id`, every operation
/// on `/things/{param}...`, the new param from the answer, the others as the request had them
/// (`POST /conversations/{id}/messages` → `PATCH /conversations/{id}/messages/{message_id}`).
/// Clients (and Schemathesis' stateful phase) follow them from a created resource to its uses.
fn links_from(endpoint: &Endpoint, endpoints: &[Endpoint]) -> Vec<(String, Link)> {
    let creates = endpoint.method == Method::POST
        && endpoint.doc.as_ref().is_some_and(|d| {
            d.success.iter().any(|(status, answer)| *status == 201 && matches!(answer, Answer::Data { .. }))
        });
    if !creates {
        return Vec::new();
    }
    let known = path_params(&endpoint.path);
    let prefix = format!("{}/{{", endpoint.path);
    let mut links = Vec::new();
    for target in endpoints.iter().filter(|t| t.doc.is_some() && t.path.starts_with(&prefix)) {
        // Exactly one parameter the creation does not know: the one its answer names.
        let unknown: Vec<String> =
            path_params(&target.path).into_iter().filter(|p| !known.contains(p)).collect();
        let [new] = unknown.as_slice() else { continue };
        let new = new.clone();
        let mut link = LinkBuilder::new()
            .operation_id(operation_id(&target.method, &target.path))
            .parameter(new.clone(), "$response.body#/data/id");
        for param in path_params(&target.path).into_iter().filter(|p| *p != new) {
            link = link.parameter(param.clone(), format!("$request.path.{param}"));
        }
        links.push((operation_id(&target.method, &target.path), link.build()));
    }
    links
}

fn operation(endpoint: &Endpoint, doc: &Doc, tag: String, links: &[(String, Link)]) -> Operation {
    let mut errors: Vec<Code> = Vec::new();
    let mut op = OperationBuilder::new()
        .summary(Some(doc.summary))
        .description(doc.description)
        .operation_id(Some(operation_id(&endpoint.method, &endpoint.path)))
        .tag(tag);
    match doc.access {
        Access::Credential => {
            op = op
                .security(SecurityRequirement::new("access_token", Vec::<String>::new()))
                .security(SecurityRequirement::new("api_key", Vec::<String>::new()));
            // Every request of a user or key counts against the API's per-minute limit.
            errors.extend([Code::Unauthorized, Code::RateLimited]);
        }
        Access::Public => {
            op = op.security(SecurityRequirement::default());
        }
        Access::Signed => {
            for (name, what) in [
                ("webhook-id", "The message id: the same on every retry; a repeat is accepted once."),
                ("webhook-timestamp", "Unix seconds of this attempt (within 5 minutes)."),
                ("webhook-signature", "`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, space-separated."),
            ] {
                op = op.parameter(header(name, what, false));
            }
            op = op.security(SecurityRequirement::default());
            errors.push(Code::Unauthorized);
        }
        Access::SignedBy(name, what) => {
            op = op.parameter(header(name, what, false)).security(SecurityRequirement::default());
            errors.push(Code::Unauthorized);
        }
    }
    if let Some(permission) = doc.permission {
        let text = doc.description.map(|d| format!("{d}\n\n")).unwrap_or_default();
        op = op.description(Some(format!("{text}Needs the `{permission}` permission.")));
    }
    // Path parameters: UUIDs unless the doc says otherwise; one that does not parse names
    // nothing, so 404.
    for name in path_params(&endpoint.path) {
        let schema = doc
            .path_params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(uuid_schema);
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schema)),
        );
        errors.push(Code::NotFound);
    }
    if !doc.query.is_empty() {
        errors.push(Code::BadRequest);
    }
    for parameter in &doc.query {
        op = op.parameter(parameter.clone());
    }
    if doc.min_position {
        op = op.parameter(header(
            "X-Min-Position",
            "A log cursor: answer only once the read models include it (waits up to 5 s, then 503 \
             `projection_lagging`).",
            false,
        ));
        errors.extend([Code::BadRequest, Code::ProjectionLagging]);
    }
    if doc.if_match {
        op = op.parameter(header(
            "If-Match",
            "`\"<version>\"` or `*`: refuse with 412 when the resource has moved on.",
            false,
        ));
        errors.push(Code::BadRequest);
    }
    match endpoint.idempotency {
        IdempotencyKeys::Honoured => {
            op = op.parameter(header(
                "Idempotency-Key",
                "Replaying a key with the same body within 24 h answers the original response with \
                 `Idempotent-Replayed: true` and writes nothing.",
                false,
            ));
            // A key that is not a key (empty, too long) is 400.
            errors.extend([Code::BadRequest, Code::IdempotencyKeyReused, Code::IdempotencyInProgress]);
        }
        IdempotencyKeys::Refused => errors.push(Code::IdempotencyNotSupported),
        IdempotencyKeys::NotApplicable | IdempotencyKeys::Signed => {}
    }
    if let Some(body) = &doc.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(JSON, ContentBuilder::new().schema(Some(body.clone())).build())
                .build(),
        ));
        errors.extend([
            Code::BadRequest,
            Code::PayloadTooLarge,
            Code::UnsupportedMediaType,
            Code::ValidationFailed,
        ]);
    }
    if endpoint.path.starts_with("/api/v1/auth/") {
        errors.push(Code::RateLimited);
    }
    errors.push(Code::ServiceUnavailable);
    errors.extend_from_slice(&doc.errors);

    let mut responses = ResponsesBuilder::new();
    for (status, answer) in &doc.success {
        let mut response = success(*status, answer, endpoint, doc);
        if *status == 201 {
            for (name, link) in links {
                response.links.insert(name.clone(), RefOr::T(link.clone()));
            }
        }
        responses = responses.response(status.to_string(), response);
    }
    for (status, codes) in by_status(&errors) {
        let names: Vec<String> = codes.iter().map(|c| format!("`{}`", c.describe().0)).collect();
        let mut response = ResponseBuilder::new()
            .description(names.join(", "))
            .content(JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build());
        if status == 429 || status == 503 {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(integer_schema()))
                    .description(Some("Seconds to wait before trying again."))
                    .build(),
            );
        }
        responses = responses.response(status.to_string(), response.build());
    }
    op.responses(responses.build()).build()
}

/// The success response: the envelope around `data`, or a document of its own.
fn success(status: u16, answer: &Answer, endpoint: &Endpoint, doc: &Doc) -> utoipa::openapi::Response {
    let is_command = endpoint.method != Method::GET;
    let mut response = ResponseBuilder::new();
    match answer {
        Answer::Data { schema, meta } => {
            response = response
                .description(doc.summary)
                .content(JSON, ContentBuilder::new().schema(Some(envelope(schema.clone(), meta))).build());
            if let Some(media_type) = doc.alternative {
                response =
                    response.content(media_type, ContentBuilder::new().schema(Some(string_schema())).build());
            }
        }
        Answer::NoContent => {
            response = response.description("Done; the position of the change in `X-Position`.");
        }
        Answer::Raw { media_type, schema } => {
            response = response
                .description(doc.summary)
                .content(*media_type, ContentBuilder::new().schema(Some(schema.clone())).build());
        }
    }
    if is_command && !matches!(answer, Answer::Raw { .. }) {
        response = response.header(
            "X-Position",
            HeaderBuilder::new()
                .schema(Some(string_schema()))
                .description(Some("The log cursor of the command's last event (also `meta.position`)."))
                .build(),
        );
    }
    if doc.etag && status != 204 {
        response = response.header(
            "ETag",
            HeaderBuilder::new()
                .schema(Some(string_schema()))
                .description(Some("`\"<version>\"` of the resource, for `If-Match`."))
                .build(),
        );
    }
    if endpoint.idempotency == IdempotencyKeys::Honoured {
        response = response.header(
            "Idempotent-Replayed",
            HeaderBuilder::new()
                .schema(Some(string_schema()))
                .description(Some(
                    "`true` when this is the stored answer of an earlier request with the same key.",
                ))
                .build(),
        );
    }
    response.build()
}

/// The error statuses, each with its codes, without repeats.
fn by_status(codes: &[Code]) -> BTreeMap<u16, Vec<Code>> {
    let mut out: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in codes {
        let list = out.entry(code.describe().1.as_u16()).or_default();
        if !list.contains(code) {
            list.push(*code);
        }
    }
    out
}

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

fn header(name: &str, description: &str, required: bool) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required { Required::True } else { Required::False })
        .description(Some(description))
        .schema(Some(string_schema()))
        .build()
}
