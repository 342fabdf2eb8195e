//! The schemas every part of the document shares: the success envelope, the error, the page
//! meta, and the small ones (a uuid, a string, any object) the endpoints' docs name.

use utoipa::openapi::schema::{AdditionalProperties, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr};

use super::doc::Meta;
use crate::http::error::Code;

/// `{success: true, data, meta}`.
pub(super) fn envelope(data: RefOr<Schema>, meta: &Meta) -> Schema {
    let mut meta_schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("position", string_schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    match meta {
        Meta::Plain => {}
        Meta::Page => {
            meta_schema = meta_schema
                .property("pagination", Ref::from_schema_name("Pagination"))
                .required("pagination");
        }
        Meta::Cursor => {
            meta_schema = meta_schema
                .property(
                    "next_cursor",
                    ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                        Type::String,
                        Type::Null,
                    ])),
                )
                .property("limit", integer_schema())
                .required("next_cursor");
        }
        Meta::Fields(_) => {}
    }
    let meta_schema: RefOr<Schema> = match meta {
        Meta::Fields(fields) => RefOr::T(Schema::AllOf(
            utoipa::openapi::schema::AllOfBuilder::new()
                .item(meta_schema.build())
                .item(fields.clone())
                .build(),
        )),
        _ => RefOr::T(Schema::Object(meta_schema.build())),
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("success", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true])))
            .property("data", data)
            .property("meta", meta_schema)
            .required("success")
            .required("data")
            .required("meta")
            .build(),
    )
}

/// `{success: false, error, code, details}`.
pub(super) fn error_schema() -> Schema {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.describe().0).collect();
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("success", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([false])))
            .property(
                "error",
                ObjectBuilder::new().schema_type(Type::String).description(Some("A human message.")),
            )
            .property("code", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes)))
            .property(
                "details",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some("For `validation_failed`: each field with its messages."))
                    .additional_properties(Some(AdditionalProperties::FreeForm(true))),
            )
            .required("success")
            .required("error")
            .required("code")
            .required("details")
            .build(),
    )
}

pub(super) fn pagination_schema() -> Schema {
    let mut object = ObjectBuilder::new().schema_type(Type::Object);
    for field in ["page", "per_page", "total", "total_pages"] {
        object = object.property(field, integer_schema()).required(field);
    }
    Schema::Object(object.build())
}

pub fn uuid_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .build(),
    ))
}

/// `T`'s schema inline (for shapes that refer to no other).
pub fn schema_of<T: utoipa::PartialSchema>() -> RefOr<Schema> {
    T::schema()
}

pub fn string_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::String).build()))
}

pub(super) fn integer_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::Integer).build()))
}

/// Any JSON object.
pub fn any_object() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .build(),
    ))
}
