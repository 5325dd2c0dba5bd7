//! Enums with one wire name per value.

/// Declares a field-less enum whose every value has exactly one name: the one it has in JSON
/// (serde), in the database and in URLs alike. The macro writes `ALL` (every value, in
/// declaration order), `as_str`, `parse`, `Display`, and serde's `Serialize` and `Deserialize`
/// through those names, so a spelling can never differ between them.
///
/// ```
/// tally_kernel::wire_enum! {
///     /// A traffic light.
///     pub enum Light {
///         /// Stop.
///         Red = "red",
///         /// Go.
///         Green = "green",
///     }
/// }
///
/// assert_eq!(Light::parse("green"), Some(Light::Green));
/// assert_eq!(Light::Red.as_str(), "red");
/// assert_eq!(Light::ALL, &[Light::Red, Light::Green]);
/// ```
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's one name on the wire and in storage.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }

            /// The value with this name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::serde::Serialize for $name {
            fn serialize<S: $crate::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str> as $crate::serde::Deserialize>::deserialize(
                    deserializer,
                )?;
                Self::parse(&name).ok_or_else(|| {
                    <D::Error as $crate::serde::de::Error>::unknown_variant(&name, &[$($wire),+])
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    crate::wire_enum! {
        /// A test enum.
        enum Shape {
            /// Round.
            Circle = "circle",
            /// Four equal sides.
            Square = "square_shape",
        }
    }

    #[test]
    fn one_name_everywhere() {
        for shape in Shape::ALL {
            let json = serde_json::to_string(shape).unwrap();
            assert_eq!(json, format!("\"{}\"", shape.as_str()));
            assert_eq!(serde_json::from_str::<Shape>(&json).unwrap(), *shape);
            assert_eq!(Shape::parse(&shape.to_string()), Some(*shape));
        }
        assert_eq!(Shape::parse("Square"), None);
        let err = serde_json::from_str::<Shape>("\"triangle\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `triangle`, expected `circle` or `square_shape`"),
            "{err}"
        );
    }
}
