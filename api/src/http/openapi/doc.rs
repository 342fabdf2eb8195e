//! What a route says about itself: [`Doc`], attached where the route is added
//! ([`crate::http::routes::Routes::doc`]), so an endpoint and its description land in one place.
//!
//! A `Doc` names what the endpoint takes (query, body, headers), what it answers on success, and
//! the errors only it can give (a conflict, a failed precondition). The errors every endpoint of
//! its kind gives — 401 for a credential, 404 for an id in the path, 400/413/415/422 for a body,
//! the idempotency codes of a POST, 503 `projection_lagging` for a query — follow from those facts
//! when the document is assembled ([`super::document`]), so they cannot be forgotten one by one.

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};

use crate::http::error::Code;

/// A query parameter is absent or has a value: `Option` makes it optional, not `null`able
/// (a query string cannot say null).
fn not_null(mut parameter: Parameter) -> Parameter {
    if let Some(RefOr::T(Schema::Object(object))) = &mut parameter.schema {
        if let SchemaType::Array(types) = &object.schema_type {
            let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
            object.schema_type =
                if kept.len() == 1 { SchemaType::Type(kept[0].clone()) } else { SchemaType::Array(kept) };
        }
    }
    parameter
}

/// How a caller proves who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// An access token or an API key (`Authorization: Bearer ...`).
    Credential,
    /// Nothing: registration, login, refresh, the document itself.
    Public,
    /// A Standard Webhooks signature over the body (incoming webhooks).
    Signed,
    /// Authenticated by a provider's own signature header (Stripe): its name and format.
    SignedBy(&'static str, &'static str),
}

/// What `meta` holds besides `position`.
// Built once per route when the document is made, never on a request path: the variants' sizes
// do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Meta {
    Plain,
    /// `meta.pagination` of a page-paginated list.
    Page,
    /// `meta.next_cursor` and `meta.limit` of a cursor-paginated list.
    Cursor,
    /// Fields of its own (a date range, an unread count), as an object schema.
    Fields(RefOr<Schema>),
}

/// A success answer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Answer {
    /// The envelope, `data` of this schema.
    Data { schema: RefOr<Schema>, meta: Meta },
    /// 204: the position in `X-Position` only.
    NoContent,
    /// A document of its own (not the envelope), in this media type.
    Raw { media_type: &'static str, schema: RefOr<Schema> },
}

#[derive(Clone, Debug)]
pub struct Doc {
    pub(super) summary: &'static str,
    pub(super) description: Option<&'static str>,
    pub(super) access: Access,
    pub(super) permission: Option<&'static str>,
    pub(super) query: Vec<Parameter>,
    /// Path parameters that are not UUIDs.
    pub(super) path_params: Vec<(&'static str, RefOr<Schema>)>,
    pub(super) body: Option<RefOr<Schema>>,
    pub(super) success: Vec<(u16, Answer)>,
    pub(super) errors: Vec<Code>,
    pub(super) if_match: bool,
    pub(super) etag: bool,
    pub(super) min_position: bool,
    /// Another media type the success may come in (`format=csv`).
    pub(super) alternative: Option<&'static str>,
    pub(super) schemas: Vec<(String, RefOr<Schema>)>,
}

impl Doc {
    /// An endpoint for callers with a credential.
    pub fn new(summary: &'static str) -> Self {
        Self {
            summary,
            description: None,
            access: Access::Credential,
            permission: None,
            query: Vec::new(),
            path_params: Vec::new(),
            body: None,
            success: Vec::new(),
            errors: Vec::new(),
            if_match: false,
            etag: false,
            min_position: false,
            alternative: None,
            schemas: Vec::new(),
        }
    }

    pub fn describe(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    /// Anyone may call it.
    pub fn public(mut self) -> Self {
        self.access = Access::Public;
        self
    }

    /// Authenticated by a Standard Webhooks signature instead of a credential.
    pub fn signed(mut self) -> Self {
        self.access = Access::Signed;
        self
    }

    /// Needs this permission of the registry: 403 without it.
    pub fn permission(mut self, name: &'static str) -> Self {
        self.permission = Some(name);
        self.errors.push(Code::Forbidden);
        self
    }

    /// Authenticated by a provider's signature in `header` instead of a credential.
    pub fn signed_by(mut self, header: &'static str, format: &'static str) -> Self {
        self.access = Access::SignedBy(header, format);
        self
    }

    /// Query parameters, from the type the handler parses them into.
    pub fn query<P: IntoParams>(mut self) -> Self {
        self.query.extend(P::into_params(|| Some(ParameterIn::Query)).into_iter().map(not_null));
        self
    }

    /// A path parameter that is not a UUID.
    pub fn path_param(mut self, name: &'static str, schema: RefOr<Schema>) -> Self {
        self.path_params.push((name, schema));
        self
    }

    /// A JSON body of this schema.
    pub fn body<T: ToSchema>(mut self) -> Self {
        self.body = Some(self.reference::<T>());
        self
    }

    /// The envelope with `data` of `T`.
    pub fn answers<T: ToSchema>(self, status: u16) -> Self {
        self.answers_with::<T>(status, Meta::Plain)
    }

    pub fn answers_with<T: ToSchema>(mut self, status: u16, meta: Meta) -> Self {
        let schema = self.reference::<T>();
        self.success.push((status, Answer::Data { schema, meta }));
        self
    }

    /// The envelope with `data` a list of `T`.
    pub fn lists<T: ToSchema>(mut self, meta: Meta) -> Self {
        let item = self.reference::<T>();
        let schema = RefOr::T(Schema::Array(ArrayBuilder::new().items(item).build()));
        self.success.push((200, Answer::Data { schema, meta }));
        self
    }

    /// A page-paginated list of `T` (`page`, `per_page`; `meta.pagination`).
    pub fn paged<T: ToSchema>(self) -> Self {
        self.query::<crate::http::extract::PageParams>().lists::<T>(Meta::Page)
    }

    /// 204 with `X-Position`.
    pub fn no_content(mut self) -> Self {
        self.success.push((204, Answer::NoContent));
        self
    }

    /// Something other than the envelope (the document, a file).
    pub fn raw(mut self, status: u16, media_type: &'static str, schema: RefOr<Schema>) -> Self {
        self.success.push((status, Answer::Raw { media_type, schema }));
        self
    }

    /// Errors this endpoint gives beyond those of its kind.
    pub fn errors(mut self, codes: &[Code]) -> Self {
        self.errors.extend_from_slice(codes);
        self
    }

    /// Takes `If-Match` (412 when stale) and answers with an `ETag`.
    pub fn if_match(mut self) -> Self {
        self.if_match = true;
        self.etag = true;
        self.errors.push(Code::PreconditionFailed);
        self
    }

    /// Answers with an `ETag` of the resource's version.
    pub fn etag(mut self) -> Self {
        self.etag = true;
        self
    }

    /// The success may also come as this media type (a file), as the query asks.
    pub fn alternative(mut self, media_type: &'static str) -> Self {
        self.alternative = Some(media_type);
        self
    }

    /// Reads read models: takes `X-Min-Position` (503 `projection_lagging` after 5 s).
    pub fn reads(mut self) -> Self {
        self.min_position = true;
        self
    }

    /// A named reference to `T`, registering it and the schemas it refers to.
    fn reference<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let name = T::name().into_owned();
        T::schemas(&mut self.schemas);
        self.schemas.push((name.clone(), T::schema()));
        RefOr::Ref(Ref::from_schema_name(name))
    }
}
