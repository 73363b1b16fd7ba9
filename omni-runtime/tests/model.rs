//! Unit tests of the code `#[derive(Model)]` and `#[collection]` generate.

use omni_runtime::__private::schema::{FieldSchema, Schema, TypeDecl};
use omni_runtime::conn::ConnId;
use omni_runtime::model::{AttrSet, write_object};
use omni_runtime::prelude::*;

/// A position on the board.
#[derive(Serialize, Deserialize, TS, Clone, Default, PartialEq, Debug)]
struct Pos {
    x: i32,
    y: i32,
}

/// A player of the game.
#[derive(Model, Clone, Default, PartialEq, Debug)]
struct Player {
    /// Shown above the avatar.
    name: String,
    x: i32,
    y: i32,
    online: bool,
    #[model(readonly)]
    score: u64,
    _password: String,
}

#[derive(Model, Clone, Default, Debug)]
#[model(rename_all = "camelCase", name = "Avatar")]
struct Sprite {
    home_pos: Pos,
    trail: Vec<Pos>,
    target: Option<Pos>,
    #[model(rename = "label")]
    display_name: Option<String>,
}

#[derive(Model, Clone, Default, Debug)]
struct Tagged<T> {
    value: T,
    label: String,
}

#[derive(Default)]
struct Session;

impl Permissions<Session> for Player {}

/// Everyone in the game.
#[collection(model = Player)]
struct Players;

#[collection(model = Sprite, name = "sprites")]
struct ChatMessages {
    _limit: usize,
}

fn jim() -> Player {
    Player {
        name: "Jim".into(),
        x: 1,
        y: 2,
        online: true,
        score: 7,
        _password: "secret".into(),
    }
}

fn json(model: &Player, attrs: AttrSet) -> String {
    let mut out = Vec::new();
    write_object(model, Some(3), attrs, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn attributes() {
    assert_eq!(Player::NAME, "Player");
    assert_eq!(
        Player::ATTRS,
        &[
            PlayerAttr::Name,
            PlayerAttr::X,
            PlayerAttr::Y,
            PlayerAttr::Online,
            PlayerAttr::Score
        ]
    );
    for (i, attr) in Player::ATTRS.iter().enumerate() {
        assert_eq!(attr.index(), i);
        assert_eq!(PlayerAttr::from_name(attr.name()), Some(*attr));
    }
    assert_eq!(PlayerAttr::X.name(), "x");
    assert_eq!(PlayerAttr::from_name("_password"), None);
    assert_eq!(PlayerAttr::from_name("password"), None);
    assert!(PlayerAttr::Score.is_readonly());
    assert!(!PlayerAttr::Name.is_readonly());
    assert_eq!(Player::change_attr(&PlayerChange::Y(3)), PlayerAttr::Y);

    assert_eq!(Sprite::NAME, "Avatar");
    let names: Vec<_> = Sprite::ATTRS.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["homePos", "trail", "target", "label"]);
    assert_eq!(SpriteAttr::from_name("home_pos"), None);
}

#[test]
fn setters_record_exactly_the_touched_attrs() {
    let mut player = jim();
    let mut changed = AttrSet::EMPTY;
    {
        let mut view = player.view_mut(&mut changed);
        assert_eq!(view.x(), &1);
        assert_eq!(view.model().name, "Jim");
        assert_eq!(view.name, "Jim", "deref to the model");
        view.set_x(10).set_online(false);
    }
    assert_eq!(player.x, 10);
    assert!(!player.online);
    assert_eq!(
        changed.iter().collect::<Vec<_>>(),
        [PlayerAttr::X.index(), PlayerAttr::Online.index()]
    );

    let mut changed = AttrSet::EMPTY;
    {
        let mut view = player.view_mut(&mut changed);
        view.set_password("hunter2".into());
        assert_eq!(view._password(), "hunter2");
    }
    assert_eq!(player._password, "hunter2");
    assert!(changed.is_empty(), "private setters record nothing");

    let mut changed = AttrSet::EMPTY;
    player.view_mut(&mut changed).set_score(8).set_score(9);
    assert_eq!(changed, AttrSet::from_bits(1 << PlayerAttr::Score.index()));
}

#[test]
fn apply_changes() {
    let mut player = jim();
    player.apply(PlayerChange::Name("Ann".into()));
    player.apply(PlayerChange::Y(-4));
    assert_eq!((player.name.as_str(), player.y), ("Ann", -4));
    assert_eq!(
        format!("{:?}", PlayerChange::Name("Ann".into())),
        r#"Name("Ann")"#
    );
    let change = PlayerChange::X(5);
    assert_eq!(format!("{:?}", change.clone()), "X(5)");
}

fn patch(json: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(json).unwrap()
}

#[test]
fn decode_good_patch() {
    let changes = Player::decode_patch(&patch(r#"{"x": 10, "name": "Ann"}"#)).unwrap();
    assert_eq!(changes.len(), 2);
    let mut player = jim();
    for change in changes {
        player.apply(change);
    }
    assert_eq!((player.x, player.name.as_str()), (10, "Ann"));

    let changes = Sprite::decode_patch(&patch(
        r#"{"target": {"x": 1, "y": 2}, "label": null, "trail": []}"#,
    ))
    .unwrap();
    assert_eq!(changes.len(), 3);
}

#[test]
fn decode_errors() {
    let player = jim();
    let before = player.clone();

    let err = Player::decode_patch(&patch(r#"{"name": "Ann", "x": "abc"}"#)).unwrap_err();
    assert_eq!((err.model, err.attr.as_str()), ("Player", "x"));
    let message = err.to_string();
    assert!(
        message.starts_with("attribute `x` of model `Player` expected number (i32): "),
        "{message}"
    );

    let err = Sprite::decode_patch(&patch(r#"{"target": 3}"#)).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected Pos | null (Option<Pos>)"),
        "{err}"
    );

    let err = Player::decode_patch(&patch(r#"{"nmae": "Ann"}"#)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attribute `nmae` of model `Player` is not an attribute of this model"
    );

    let err = Player::decode_patch(&patch(r#"{"_password": "x"}"#)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attribute `_password` of model `Player` is server-only: clients can neither read nor write it"
    );

    // Decoding never touches the model; nothing is applied on error.
    assert_eq!(player, before);
}

#[test]
fn json_encoding() {
    let player = jim();
    let mut out = Vec::new();
    player.write_attr(PlayerAttr::Name, &mut out);
    assert_eq!(out, br#""Jim""#);
    assert_eq!(player.attr_value(PlayerAttr::Score), serde_json::json!(7));
    assert_eq!(
        json(&player, AttrSet::first(Player::ATTRS.len())),
        r#"{"oid":3,"name":"Jim","x":1,"y":2,"online":true,"score":7}"#
    );
    assert_eq!(
        json(&player, AttrSet::from_bits(0b10)),
        r#"{"oid":3,"x":1}"#
    );

    let sprite = Sprite {
        target: Some(Pos { x: 1, y: 2 }),
        ..Default::default()
    };
    let mut out = Vec::new();
    write_object(&sprite, None, AttrSet::first(4), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"homePos":{"x":0,"y":0},"trail":[],"target":{"x":1,"y":2},"label":null}"#
    );
}

#[test]
fn describe() {
    let mut schema = Schema::new();
    Player::describe(&mut schema);
    Sprite::describe(&mut schema);
    Tagged::<u8>::describe(&mut schema);

    let player = &schema.models[0];
    assert_eq!(player.name, "Player");
    assert_eq!(player.docs.as_deref(), Some("A player of the game."));
    let field = |name: &str, ts: &str, readonly: bool, docs: Option<&str>| FieldSchema {
        name: name.into(),
        ts_type: ts.into(),
        readonly,
        docs: docs.map(Into::into),
    };
    assert_eq!(
        player.fields,
        [
            field("name", "string", false, Some("Shown above the avatar.")),
            field("x", "number", false, None),
            field("y", "number", false, None),
            field("online", "boolean", false, None),
            field("score", "number", true, None),
        ],
        "private fields absent, u64 is a number"
    );

    let sprite = &schema.models[1];
    assert_eq!(sprite.name, "Avatar");
    let types: Vec<_> = sprite
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.ts_type.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("homePos", "Pos"),
            ("trail", "Array<Pos>"),
            ("target", "Pos | null"),
            ("label", "string | null")
        ]
    );
    assert_eq!(
        schema.types,
        [TypeDecl {
            name: "Pos".into(),
            decl: "type Pos = { x: number, y: number, };".into()
        }]
    );

    let tagged = &schema.models[2];
    assert_eq!(tagged.fields[0].ts_type, "number");
}

#[test]
fn permission_defaults() {
    let session = Session;
    let player = jim();
    let ctx = Access::new(&session, ConnId::from_raw(1), Oid::from_raw(3));
    assert!(player.can_read(&ctx, None));
    assert!(player.can_read(&ctx, Some(PlayerAttr::X)));
    assert!(!player.can_write(&ctx, &PlayerChange::X(1)));
}

#[test]
fn collections() {
    assert_eq!(Players::NAME, "players");
    assert_eq!(Players::DOCS, Some("Everyone in the game."));
    assert_eq!(ChatMessages::NAME, "sprites");
    assert_eq!(ChatMessages::DOCS, None);

    let (_, models) =
        omni_runtime::__private::seeded_parts(Players::with([jim(), Player::default()]));
    assert_eq!(models, [jim(), Player::default()]);
    let (_, models) = omni_runtime::__private::seeded_parts(Players::empty());
    assert!(models.is_empty());
    let _ = ChatMessages { _limit: 3 };
}

#[test]
fn generics() {
    let mut tagged = Tagged {
        value: 3u8,
        label: "three".into(),
    };
    let mut changed = AttrSet::EMPTY;
    tagged.view_mut(&mut changed).set_value(4);
    assert_eq!(tagged.value, 4);
    assert_eq!(changed, AttrSet::from_bits(1));
    let changes = Tagged::<u8>::decode_patch(&patch(r#"{"value": 9}"#)).unwrap();
    assert!(matches!(changes[..], [TaggedChange::Value(9)]));
    assert!(
        Tagged::<u8>::decode_patch(&patch(r#"{"value": 900}"#))
            .unwrap_err()
            .to_string()
            .contains("expected number (u8)")
    );
}
