//! Every ```rust block of README.md, compiled as part of `cargo test --workspace` (see
//! build.rs), in a crate whose only dependencies are those of the README's Cargo.toml, so a
//! block that needs `serde` or `ts-rs` in the app's Cargo.toml fails here. Blocks that are
//! fragments compile as the body of an async fn, with the types they mention from [`context`].

include!(concat!(env!("OUT_DIR"), "/readme_blocks.rs"));

/// What the README's fragments assume the app already has.
pub mod context {
    /// The players game (examples/game), with a connected Rust client.
    pub mod game {
        pub use example_game::{
            LoggedIn, Login, Message, Messages, Player, PlayerChange, Players, Session,
        };
        pub use omni_runtime::client::Client;
        pub use omni_runtime::prelude::*;
    }

    /// The storage, channels and rules block: a todo list, chat rooms and invoices.
    pub mod storage {
        pub use omni_runtime::prelude::*;

        /// A session with an admin flag.
        #[derive(Default)]
        pub struct Session {
            /// May list invoices.
            pub admin: bool,
        }

        /// A todo, stored whole in redb.
        #[derive(Model, Clone, Default, Serialize, Deserialize)]
        pub struct Todo {
            /// What to do.
            pub title: String,
        }
        impl Permissions<Session> for Todo {}
        /// The todos.
        #[collection(model = Todo)]
        pub struct Todos;
        impl CollectionPermissions<Session> for Todos {}

        /// A chat line in a room.
        #[derive(Model, Clone, Default)]
        pub struct Message {
            /// The room: the channel.
            pub room: String,
        }
        impl Permissions<Session> for Message {}
        /// The chat lines.
        #[collection(model = Message)]
        pub struct Messages;
        impl CollectionPermissions<Session> for Messages {}

        /// An invoice.
        #[derive(Model, Clone, Default)]
        pub struct Invoice {
            /// Amount in cents.
            pub cents: i64,
        }
        impl Permissions<Session> for Invoice {}
        /// The invoices.
        #[collection(model = Invoice)]
        pub struct Invoices;
        impl CollectionPermissions<Session> for Invoices {}
    }
}

/// The prelude's `Serialize`, `Deserialize` and `TS` derives, in a crate without serde or
/// ts-rs: the same wire form and TypeScript types as serde's and ts-rs's own derives.
#[cfg(test)]
mod derives {
    use omni_runtime::__private::{serde_json, ts_config};
    use omni_runtime::prelude::*;

    /// A struct with serde and ts attributes and docs.
    #[derive(Serialize, Deserialize, TS, Clone, Debug, PartialEq, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Profile {
        /// The name.
        display_name: String,
        #[serde(rename = "years")]
        age: u32,
        #[serde(skip)]
        cache: u8,
        tags: Vec<String>,
        best: Option<Pos>,
    }

    #[derive(Serialize, Deserialize, TS, Clone, Debug, PartialEq, Default)]
    struct Pos {
        x: i32,
        y: i32,
    }

    #[derive(Serialize, Deserialize, TS, Debug, PartialEq)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Shape {
        Circle { r: f64 },
        Square { side: f64 },
    }

    #[derive(Serialize, Deserialize, TS, Debug, PartialEq)]
    struct Tagged<T> {
        value: T,
        label: String,
    }

    #[derive(Serialize, TS)]
    struct Borrowed<'a> {
        name: &'a str,
    }

    #[derive(Serialize, Deserialize, TS, Debug, PartialEq)]
    #[serde(rename = "Renamed")]
    struct Original(u8, String);

    fn round_trip<T>(value: &T, json: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(value).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
    }

    #[test]
    fn serde_attributes_give_serdes_wire_form() {
        let p = Profile {
            display_name: "Ann".into(),
            age: 7,
            cache: 9,
            tags: vec!["a".into()],
            best: Some(Pos { x: 1, y: 2 }),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"displayName":"Ann","years":7,"tags":["a"],"best":{"x":1,"y":2}}"#
        );
        let back: Profile = serde_json::from_str(r#"{"displayName":"Ann"}"#).unwrap();
        assert_eq!(back.display_name, "Ann");
        assert_eq!((back.age, back.cache, back.best), (0, 0, None));
        round_trip(&Shape::Circle { r: 1.5 }, r#"{"kind":"circle","r":1.5}"#);
        round_trip(
            &Tagged {
                value: 3u8,
                label: "n".into(),
            },
            r#"{"value":3,"label":"n"}"#,
        );
        round_trip(&Original(1, "x".into()), r#"[1,"x"]"#);
        assert_eq!(
            serde_json::to_string(&Borrowed { name: "b" }).unwrap(),
            r#"{"name":"b"}"#
        );
    }

    #[test]
    fn ts_declarations_are_ts_rs_ones_under_the_types_own_names() {
        let cfg = ts_config();
        assert_eq!(
            Profile::decl(&cfg),
            "type Profile = { \n/**\n * The name.\n */\ndisplayName: string, years: number, tags: Array<string>, best: Pos | null, };"
        );
        assert_eq!(Pos::name(&cfg), "Pos");
        assert_eq!(
            Shape::decl(&cfg),
            r#"type Shape = { "kind": "circle", r: number, } | { "kind": "square", side: number, };"#
        );
        assert_eq!(Tagged::<u8>::name(&cfg), "Tagged<number>");
        assert_eq!(
            Tagged::<u8>::decl(&cfg),
            "type Tagged<T> = { value: T, label: string, };"
        );
        assert_eq!(Borrowed::name(&cfg), "Borrowed");
        assert_eq!(Original::name(&cfg), "Renamed");
        assert_eq!(Option::<Pos>::name(&cfg), "Pos | null");
    }
}
