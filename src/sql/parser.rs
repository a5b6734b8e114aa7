//! Parsing: SQL text → ddb's [`ast`](crate::sql::ast) types.
//!
//! sqlparser (PostgreSQL dialect) does the parsing; this module converts its tree into ddb's
//! smaller one immediately. Any construct ddb does not implement is refused here with SQLSTATE
//! 0A000 and a message that names the construct, so no later stage meets it.
//!
//! This is also where the depth of ddb's trees is bounded ([`crate::types::nesting`]): every
//! converted expression enters one level, and a statement nested deeper than
//! [`nesting::MAX_DEPTH`] is refused with 54001, so every later pass (binding, evaluation, the
//! RPC encoding) recurses a bounded number of times. `AND`/`OR` chains are regrouped into
//! balanced trees instead, which evaluate the same terms in the same order (SQL's `AND` and
//! `OR` are associative, and the evaluation still stops at the first deciding term from the
//! left), so long generated filters run.
//!
//! sqlparser's own tree of a long chain is as deep as the chain, and dropping it recurses once
//! per level (about 100 bytes of stack per level in a debug build, and a level can take as
//! little as two bytes of text: `+1`, `[]`). Its parser and printer grow the stack on demand,
//! but its `Drop` cannot, so [`parse`] runs where at least [`STACK_PER_BYTE`] bytes of stack per
//! byte of text are free, on a stack segment of that size when the thread's own is too small
//! ([`stacker`]). That costs nothing for ordinary statements, whose need fits the worker's
//! stack, and a long statement's segment is virtual memory that only its depth touches. An
//! iterative dismantling of sqlparser's tree was the alternative; it would have to know every
//! node type that can chain (operators, casts, array types, set operations) and break silently
//! when sqlparser adds one.

use sqlparser::ast as sp;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::*;
use crate::types::nesting;
use crate::types::value::DataType;

/// The stack that parsing needs per byte of SQL text, in the worst case (see the module prose).
pub const STACK_PER_BYTE: usize = 160;

/// The stack that parsing needs whatever the text's length.
const STACK_BASE: usize = 512 << 10;

/// Parses one or more `;`-separated statements, returning each with its SQL text.
pub fn parse(sql: &str) -> Result<Vec<(Statement, String)>> {
    let need = sql
        .len()
        .saturating_mul(STACK_PER_BYTE)
        .saturating_add(STACK_BASE);
    stacker::maybe_grow(need, need, || parse_on_this_stack(sql))
}

fn parse_on_this_stack(sql: &str) -> Result<Vec<(Statement, String)>> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| {
        Error::sql(
            sqlstate::SYNTAX_ERROR,
            format!("syntax error: {}", strip_prefix(&e.to_string())),
        )
    })?;
    // A statement's text is what the client wrote when it sent one statement; several are
    // printed back from their trees (a long chain prints slowly: the printer recurses).
    let single = statements.len() == 1;
    statements
        .into_iter()
        .map(|s| {
            let stmt = convert_statement(&s)?;
            let text = match single {
                true => sql.trim().trim_end_matches(';').trim_end().to_string(),
                false => s.to_string(),
            };
            Ok((stmt, text))
        })
        .collect()
}

fn strip_prefix(msg: &str) -> &str {
    msg.strip_prefix("sql parser error: ").unwrap_or(msg)
}

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T> {
    Err(Error::unsupported(what))
}

/// The name of an object: the last part of a possibly qualified name, lower-cased unless quoted.
fn object_name(name: &sp::ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part_ident(part),
        // `public.t` names the one schema ddb has.
        [schema, part] if part_ident(schema)? == "public" => part_ident(part),
        _ => unsupported(format!("qualified name {name}")),
    }
}

fn part_ident(part: &sp::ObjectNamePart) -> Result<String> {
    match part.as_ident() {
        Some(ident) => Ok(ident_name(ident)),
        None => unsupported(format!("name {part}")),
    }
}

/// Identifiers fold to lower case unless double-quoted, as in PostgreSQL.
fn ident_name(ident: &sp::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn convert_statement(stmt: &sp::Statement) -> Result<Statement> {
    use sp::Statement as S;
    match stmt {
        S::StartTransaction { modes, .. } => Ok(Statement::Begin(transaction_modes(modes)?)),
        S::Commit { chain: false, .. } => Ok(Statement::Commit),
        S::Rollback {
            chain: false,
            savepoint: None,
        } => Ok(Statement::Rollback),
        S::Rollback {
            chain: false,
            savepoint: Some(name),
        } => Ok(Statement::Session(SessionStatement::RollbackTo(
            ident_name(name),
        ))),
        S::Savepoint { name } => Ok(Statement::Session(SessionStatement::Savepoint(ident_name(
            name,
        )))),
        S::ReleaseSavepoint { name } => Ok(Statement::Session(SessionStatement::Release(
            ident_name(name),
        ))),
        S::CreateTable(ct) => convert_create_table(ct),
        S::Drop {
            object_type: sp::ObjectType::Table,
            if_exists,
            names,
            cascade: false,
            ..
        } => Ok(Statement::DropTable {
            names: names.iter().map(object_name).collect::<Result<_>>()?,
            if_exists: *if_exists,
        }),
        S::CreateSequence { .. }
        | S::Drop {
            object_type: sp::ObjectType::Sequence,
            ..
        } => Err(Error::not_built_yet(
            "sequences of their own (CREATE/DROP SEQUENCE; SERIAL and identity columns have theirs)",
        )),
        S::Insert(insert) => convert_insert(insert),
        S::Update(update) => convert_update(update),
        S::Delete(delete) => convert_delete(delete),
        S::Query(query) => Ok(Statement::Select(Box::new(convert_query(query)?))),
        S::Set(set) => convert_set(set).map(Statement::Session),
        S::ShowVariable { variable } => Ok(Statement::Session(SessionStatement::Show(show_name(
            variable,
        )))),
        S::Reset(reset) => Ok(Statement::Session(SessionStatement::Reset(
            match &reset.reset {
                sp::Reset::ALL => None,
                sp::Reset::SessionAuthorization => Some("session_authorization".into()),
                sp::Reset::ConfigurationParameter(name) => Some(setting_name(name)),
            },
        ))),
        S::Discard { object_type } => Ok(Statement::Session(SessionStatement::Discard(
            object_type.to_string(),
        ))),
        S::Deallocate { name, .. } => Ok(Statement::Session(SessionStatement::Deallocate(
            match name.quote_style {
                None if name.value.eq_ignore_ascii_case("all") => None,
                _ => Some(ident_name(name)),
            },
        ))),
        S::Close { cursor } => Ok(Statement::Session(SessionStatement::Close(match cursor {
            sp::CloseCursor::All => None,
            sp::CloseCursor::Specific { name } => Some(ident_name(name)),
        }))),
        S::UNLISTEN { channel } => Ok(Statement::Session(SessionStatement::Unlisten(
            match channel.value.as_str() {
                "*" if channel.quote_style.is_none() => None,
                _ => Some(ident_name(channel)),
            },
        ))),
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            unsupported(format!("the statement {head}"))
        }
    }
}

/// The modes of `BEGIN` or `SET TRANSACTION`; the last of each kind wins, as in PostgreSQL.
fn transaction_modes(modes: &[sp::TransactionMode]) -> Result<TransactionModes> {
    let mut out = TransactionModes::default();
    for m in modes {
        match m {
            sp::TransactionMode::AccessMode(sp::TransactionAccessMode::ReadOnly) => {
                out.read_only = Some(true)
            }
            sp::TransactionMode::AccessMode(sp::TransactionAccessMode::ReadWrite) => {
                out.read_only = Some(false)
            }
            sp::TransactionMode::IsolationLevel(level) => {
                use sp::TransactionIsolationLevel as L;
                out.isolation = Some(
                    match level {
                        L::ReadUncommitted => "read uncommitted",
                        L::ReadCommitted => "read committed",
                        L::RepeatableRead => "repeatable read",
                        L::Serializable => "serializable",
                        L::Snapshot => return unsupported("the isolation level SNAPSHOT"),
                    }
                    .to_string(),
                )
            }
        }
    }
    Ok(out)
}

/// A configuration parameter's name: its dotted parts, lower-cased unless quoted (parameter
/// names are case-insensitive; `sql::settings` finds the canonical spelling).
fn setting_name(name: &sp::ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident_name(ident),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The parameter `SHOW` names: `SHOW ALL` is `None`; the multi-word spellings PostgreSQL
/// accepts (`TRANSACTION ISOLATION LEVEL`, `TIME ZONE`, `SESSION AUTHORIZATION`) are their
/// parameters' names.
fn show_name(words: &[sp::Ident]) -> Option<String> {
    let words: Vec<String> = words.iter().map(ident_name).collect();
    Some(match words.join(" ").as_str() {
        "all" => return None,
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        "session authorization" => "session_authorization".into(),
        // sqlparser gives a dotted name (`myapp.tenant`) as its parts.
        _ => words.join("."),
    })
}

fn convert_set(set: &sp::Set) -> Result<SessionStatement> {
    use sp::Set as S;
    match set {
        S::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } => {
            let local = match scope {
                None | Some(sp::ContextModifier::Session) => false,
                Some(sp::ContextModifier::Local) => true,
                Some(other) => return unsupported(format!("SET {other}")),
            };
            let name = setting_name(variable);
            // SET TIME ZONE's parameter is TimeZone.
            let name = if name == "TIMEZONE" {
                "timezone".into()
            } else {
                name
            };
            Ok(SessionStatement::Set {
                name,
                value: set_values(values)?,
                local,
            })
        }
        S::SetTimeZone { local, value } => Ok(SessionStatement::Set {
            name: "timezone".into(),
            value: set_values(std::slice::from_ref(value))?,
            local: *local,
        }),
        S::SetNames {
            charset_name,
            collation_name: None,
        } => Ok(SessionStatement::Set {
            name: "client_encoding".into(),
            value: Some(vec![SetValue::String(charset_name.value.clone())]),
            local: false,
        }),
        S::SetNamesDefault {} => Ok(SessionStatement::Set {
            name: "client_encoding".into(),
            value: None,
            local: false,
        }),
        S::SetTransaction {
            modes,
            snapshot: None,
            session,
        } => Ok(SessionStatement::SetTransaction {
            modes: transaction_modes(modes)?,
            session: *session,
        }),
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            unsupported(format!("the statement {head}"))
        }
    }
}

/// The values of a `SET`; `None` for `DEFAULT` (or `LOCAL DEFAULT`, which is the same).
fn set_values(values: &[sp::Expr]) -> Result<Option<Vec<SetValue>>> {
    use sp::Expr as E;
    if let [E::Identifier(id)] = values {
        if id.quote_style.is_none()
            && (id.value.eq_ignore_ascii_case("default") || id.value.eq_ignore_ascii_case("local"))
        {
            return Ok(None);
        }
    }
    values
        .iter()
        .map(|v| {
            Ok(match v {
                E::Value(v) => match &v.value {
                    sp::Value::SingleQuotedString(s) | sp::Value::EscapedStringLiteral(s) => {
                        SetValue::String(s.clone())
                    }
                    sp::Value::Number(n, _) => SetValue::Number(n.to_string()),
                    sp::Value::Boolean(b) => SetValue::Word {
                        text: b.to_string(),
                        quoted: false,
                    },
                    other => return unsupported(format!("the SET value {other}")),
                },
                E::UnaryOp {
                    op: sp::UnaryOperator::Minus,
                    expr,
                } => match expr.as_ref() {
                    E::Value(v) => match &v.value {
                        sp::Value::Number(n, _) => SetValue::Number(format!("-{n}")),
                        other => return unsupported(format!("the SET value -{other}")),
                    },
                    other => return unsupported(format!("the SET value -{other}")),
                },
                E::Identifier(id) => SetValue::Word {
                    text: id.value.clone(),
                    quoted: id.quote_style.is_some(),
                },
                other => return unsupported(format!("the SET value {other}")),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn convert_create_table(ct: &sp::CreateTable) -> Result<Statement> {
    if ct.query.is_some() {
        return unsupported("CREATE TABLE AS");
    }
    if ct.temporary || ct.or_replace || ct.unlogged {
        return unsupported("CREATE TEMPORARY/UNLOGGED/OR REPLACE TABLE");
    }
    let name = object_name(&ct.name)?;
    let mut columns = Vec::new();
    let mut primary_key: Vec<String> = Vec::new();
    for col in &ct.columns {
        let col_name = ident_name(&col.name);
        let serial = serial_type(&col.data_type);
        let mut def = ColumnDef {
            name: col_name.clone(),
            data_type: match &serial {
                Some(t) => t.clone(),
                None => convert_type(&col.data_type)?,
            },
            not_null: serial.is_some(),
            default: None,
            identity: serial.map(|_| false),
        };
        for opt in &col.options {
            match &opt.option {
                sp::ColumnOption::Null => def.not_null = false,
                sp::ColumnOption::NotNull => def.not_null = true,
                sp::ColumnOption::Default(e) => def.default = Some(convert_expr(e)?),
                sp::ColumnOption::Generated {
                    generated_as,
                    sequence_options,
                    generation_expr: None,
                    ..
                } if sequence_options.as_ref().is_none_or(|o| o.is_empty())
                    && !matches!(generated_as, sp::GeneratedAs::ExpStored) =>
                {
                    if def.identity.is_some() {
                        return Err(Error::sql(
                            sqlstate::SYNTAX_ERROR,
                            format!(
                                "multiple identity specifications for column \"{col_name}\" of table \"{name}\""
                            ),
                        ));
                    }
                    def.identity = Some(matches!(generated_as, sp::GeneratedAs::Always));
                    def.not_null = true;
                }
                sp::ColumnOption::Generated {
                    generation_expr: None,
                    ..
                } => return unsupported("identity sequence options (START WITH, INCREMENT BY, …)"),
                sp::ColumnOption::Generated { .. } => return unsupported("generated columns"),
                sp::ColumnOption::PrimaryKey(_) => {
                    if !primary_key.is_empty() {
                        return Err(Error::sql(
                            sqlstate::INVALID_TABLE_DEFINITION,
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    primary_key.push(col_name.clone());
                }
                other => return unsupported(format!("column option {other}")),
            }
        }
        columns.push(def);
    }
    for constraint in &ct.constraints {
        match constraint {
            sp::TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(Error::sql(
                        sqlstate::INVALID_TABLE_DEFINITION,
                        format!("multiple primary keys for table \"{name}\" are not allowed"),
                    ));
                }
                for ic in &pk.columns {
                    match &ic.column.expr {
                        sp::Expr::Identifier(id) => primary_key.push(ident_name(id)),
                        other => return unsupported(format!("primary key expression {other}")),
                    }
                }
            }
            other => return unsupported(format!("table constraint {other}")),
        }
    }
    Ok(Statement::CreateTable {
        name,
        columns,
        primary_key,
        if_not_exists: ct.if_not_exists,
    })
}

/// The integer type of a `SERIAL` pseudo-type (which only a column definition may name).
fn serial_type(ty: &sp::DataType) -> Option<DataType> {
    let sp::DataType::Custom(name, modifiers) = ty else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    match name.to_string().to_lowercase().as_str() {
        "serial" | "serial4" => Some(DataType::Int),
        "bigserial" | "serial8" => Some(DataType::BigInt),
        "smallserial" | "serial2" => Some(DataType::SmallInt),
        _ => None,
    }
}

/// Converts a SQL type name to a ddb type.
pub fn convert_type(ty: &sp::DataType) -> Result<DataType> {
    use sp::DataType as T;
    let length = |l: &Option<sp::CharacterLength>| -> Result<Option<u32>> {
        match l {
            None => Ok(None),
            Some(sp::CharacterLength::IntegerLength { length, .. }) => {
                if *length == 0 || *length > 10_485_760 {
                    return Err(Error::sql(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "length for type varchar must be between 1 and 10485760, not {length}"
                        ),
                    ));
                }
                Ok(Some(*length as u32))
            }
            Some(sp::CharacterLength::Max) => Ok(None),
        }
    };
    Ok(match ty {
        T::SmallInt(_) | T::Int2(_) => DataType::SmallInt,
        T::Int(_) | T::Integer(_) | T::Int4(_) => DataType::Int,
        T::BigInt(_) | T::Int8(_) | T::Int64 => DataType::BigInt,
        T::Real | T::Float4 => DataType::Real,
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float64 => DataType::Double,
        T::Float(info) => match info {
            sp::ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Real,
            _ => DataType::Double,
        },
        T::Text | T::String(None) => DataType::Text,
        T::Varchar(l) | T::CharVarying(l) | T::CharacterVarying(l) => DataType::Varchar(length(l)?),
        T::Char(l) | T::Character(l) => DataType::Char(length(l)?.unwrap_or(1)),
        T::Boolean | T::Bool => DataType::Bool,
        T::Uuid => DataType::Uuid,
        T::Timestamp(_, sp::TimezoneInfo::None | sp::TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        T::Custom(name, _) => {
            return Err(Error::sql(
                sqlstate::UNDEFINED_OBJECT,
                format!("type \"{name}\" does not exist"),
            ))
        }
        other => return unsupported(format!("the type {other}")),
    })
}

fn convert_insert(insert: &sp::Insert) -> Result<Statement> {
    if !insert.into {
        // PostgreSQL requires INTO; sqlparser also accepts MySQL's INSERT t VALUES.
        return Err(Error::sql(
            sqlstate::SYNTAX_ERROR,
            "syntax error: INSERT requires INTO",
        ));
    }
    if insert.on.is_some() {
        return unsupported("INSERT ... ON CONFLICT");
    }
    let table = match &insert.table {
        sp::TableObject::TableName(name) => object_name(name)?,
        other => return unsupported(format!("INSERT INTO {other}")),
    };
    let columns = if insert.columns.is_empty() {
        None
    } else {
        Some(
            insert
                .columns
                .iter()
                .map(object_name)
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let source = insert
        .source
        .as_ref()
        .ok_or_else(|| Error::unsupported("INSERT without VALUES"))?;
    if source.order_by.is_some() || source.limit_clause.is_some() || source.with.is_some() {
        return unsupported("INSERT ... SELECT");
    }
    let rows = match source.body.as_ref() {
        sp::SetExpr::Values(values) => values
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(convert_value_item)
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return unsupported("INSERT ... SELECT"),
    };
    Ok(Statement::Insert {
        table,
        columns,
        rows,
        returning: returning(insert.returning.as_deref())?,
    })
}

/// A VALUES item: the `DEFAULT` keyword, or an expression.
fn convert_value_item(e: &sp::Expr) -> Result<Expr> {
    match e {
        sp::Expr::Identifier(id)
            if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default") =>
        {
            Ok(Expr::Default)
        }
        other => convert_expr(other),
    }
}

fn single_table(from: &[sp::TableWithJoins]) -> Result<(String, Option<String>)> {
    match from {
        [twj] if twj.joins.is_empty() => match &twj.relation {
            sp::TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let alias = alias.as_ref().map(|a| ident_name(&a.name));
                Ok((object_name(name)?, alias))
            }
            other => unsupported(format!("FROM {other}")),
        },
        [_] => unsupported("JOIN"),
        _ => unsupported("a FROM list of several tables (joins)"),
    }
}

fn convert_update(update: &sp::Update) -> Result<Statement> {
    if update.from.is_some() {
        return unsupported("UPDATE ... FROM");
    }
    let (table, _) = single_table(std::slice::from_ref(&update.table))?;
    let mut sets = Vec::new();
    for a in &update.assignments {
        let column = match &a.target {
            sp::AssignmentTarget::ColumnName(name) => object_name(name)?,
            other => return unsupported(format!("assignment to {other}")),
        };
        sets.push((column, convert_expr(&a.value)?));
    }
    let filter = update.selection.as_ref().map(convert_expr).transpose()?;
    Ok(Statement::Update {
        table,
        sets,
        filter,
        returning: returning(update.returning.as_deref())?,
    })
}

fn convert_delete(delete: &sp::Delete) -> Result<Statement> {
    if delete.using.is_some() || !delete.tables.is_empty() {
        return unsupported("DELETE ... USING");
    }
    let from = match &delete.from {
        sp::FromTable::WithFromKeyword(f) | sp::FromTable::WithoutKeyword(f) => f,
    };
    let (table, _) = single_table(from)?;
    let filter = delete.selection.as_ref().map(convert_expr).transpose()?;
    Ok(Statement::Delete {
        table,
        filter,
        returning: returning(delete.returning.as_deref())?,
    })
}

/// A `RETURNING` list: select items over the written row.
fn returning(items: Option<&[sp::SelectItem]>) -> Result<Option<Vec<SelectItem>>> {
    items
        .map(|items| items.iter().map(select_item).collect())
        .transpose()
}

/// One item of a select list or a `RETURNING` list.
fn select_item(item: &sp::SelectItem) -> Result<SelectItem> {
    Ok(match item {
        sp::SelectItem::Wildcard(_) | sp::SelectItem::QualifiedWildcard(_, _) => {
            SelectItem::Wildcard
        }
        sp::SelectItem::UnnamedExpr(e) => SelectItem::Expr {
            expr: convert_expr(e)?,
            alias: None,
        },
        sp::SelectItem::ExprWithAlias { expr, alias } => SelectItem::Expr {
            expr: convert_expr(expr)?,
            alias: Some(ident_name(alias)),
        },
        other => return unsupported(format!("select item {other}")),
    })
}

#[recursive::recursive]
fn convert_query(query: &sp::Query) -> Result<Select> {
    if query.with.is_some() {
        return unsupported("WITH");
    }
    if query.fetch.is_some() || !query.locks.is_empty() {
        return unsupported("FETCH/FOR UPDATE");
    }
    let select = match query.body.as_ref() {
        sp::SetExpr::Select(s) => s,
        sp::SetExpr::Query(q) => return convert_query(q),
        sp::SetExpr::SetOperation { op, .. } => return unsupported(format!("{op}")),
        sp::SetExpr::Values(_) => return unsupported("VALUES as a query"),
        other => return unsupported(format!("the query {other}")),
    };
    if select.distinct.is_some() {
        return unsupported("SELECT DISTINCT");
    }
    if select.into.is_some() {
        return unsupported("SELECT INTO");
    }
    let from = if select.from.is_empty() {
        None
    } else {
        Some(single_table(&select.from)?)
    };
    let mut projection = Vec::new();
    for item in &select.projection {
        projection.push(select_item(item)?);
    }
    let group_by = match &select.group_by {
        sp::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
            exprs.iter().map(convert_expr).collect::<Result<Vec<_>>>()?
        }
        other => return unsupported(format!("{other}")),
    };
    let mut order_by = Vec::new();
    if let Some(ob) = &query.order_by {
        match &ob.kind {
            sp::OrderByKind::Expressions(items) => {
                for item in items {
                    let descending = match item.options.sort {
                        None | Some(sp::OrderBySort::Asc) => false,
                        Some(sp::OrderBySort::Desc) => true,
                        Some(_) => return unsupported("ORDER BY ... USING"),
                    };
                    order_by.push(OrderItem {
                        expr: convert_expr(&item.expr)?,
                        descending,
                        nulls_first: item.options.nulls_first,
                    });
                }
            }
            sp::OrderByKind::All(_) => return unsupported("ORDER BY ALL"),
        }
    }
    let (limit, offset) = match &query.limit_clause {
        None => (None, None),
        Some(sp::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return unsupported("LIMIT BY");
            }
            (
                limit.as_ref().map(convert_expr).transpose()?,
                offset
                    .as_ref()
                    .map(|o| convert_expr(&o.value))
                    .transpose()?,
            )
        }
        Some(sp::LimitClause::OffsetCommaLimit { .. }) => {
            return unsupported("LIMIT offset, count")
        }
    };
    Ok(Select {
        projection,
        from,
        filter: select.selection.as_ref().map(convert_expr).transpose()?,
        group_by,
        having: select.having.as_ref().map(convert_expr).transpose()?,
        order_by,
        limit,
        offset,
    })
}

fn convert_value(v: &sp::Value) -> Result<Expr> {
    Ok(Expr::Literal(match v {
        sp::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                Literal::Int(i)
            } else if let Ok(f) = n.parse::<f64>() {
                Literal::Float(f)
            } else {
                return Err(Error::sql(
                    sqlstate::SYNTAX_ERROR,
                    format!("invalid number {n}"),
                ));
            }
        }
        sp::Value::SingleQuotedString(s) | sp::Value::EscapedStringLiteral(s) => string(s)?,
        sp::Value::DollarQuotedString(s) => string(&s.value)?,
        sp::Value::Boolean(b) => Literal::Bool(*b),
        sp::Value::Null => Literal::Null,
        sp::Value::Placeholder(p) => {
            let n: usize = p
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| Error::unsupported(format!("the placeholder {p}")))?;
            return Ok(Expr::Param(n - 1));
        }
        other => return unsupported(format!("the literal {other}")),
    }))
}

/// A string literal; NUL (`E'\\0'`) cannot be in text, as in PostgreSQL (22021).
fn string(s: &str) -> Result<Literal> {
    if s.contains('\0') {
        return Err(Error::sql(
            sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        ));
    }
    Ok(Literal::String(s.to_string()))
}

fn convert_binary_op(op: &sp::BinaryOperator) -> Result<BinaryOp> {
    use sp::BinaryOperator as B;
    Ok(match op {
        B::And => BinaryOp::And,
        B::Or => BinaryOp::Or,
        B::Eq => BinaryOp::Eq,
        B::NotEq => BinaryOp::NotEq,
        B::Lt => BinaryOp::Lt,
        B::LtEq => BinaryOp::LtEq,
        B::Gt => BinaryOp::Gt,
        B::GtEq => BinaryOp::GtEq,
        B::Plus => BinaryOp::Add,
        B::Minus => BinaryOp::Sub,
        B::Multiply => BinaryOp::Mul,
        B::Divide => BinaryOp::Div,
        B::Modulo => BinaryOp::Mod,
        B::StringConcat => BinaryOp::Concat,
        other => return unsupported(format!("the operator {other}")),
    })
}

/// Converts an expression, one level of [`nesting`] deeper.
#[recursive::recursive]
pub fn convert_expr(e: &sp::Expr) -> Result<Expr> {
    use sp::Expr as E;
    let _level = nesting::enter()?;
    let b = |e: &sp::Expr| convert_expr(e).map(Box::new);
    Ok(match e {
        E::BinaryOp {
            op: op @ (sp::BinaryOperator::And | sp::BinaryOperator::Or),
            ..
        } => convert_chain(e, op)?,
        E::Value(v) => convert_value(&v.value)?,
        // `current_schema`, `current_user`, … without parentheses are SQL's keyword functions.
        E::Identifier(id)
            if id.quote_style.is_none()
                && SESSION_FUNCTIONS.contains(&id.value.to_lowercase().as_str())
                && !matches!(id.value.to_lowercase().as_str(), "current_database") =>
        {
            Expr::SessionValue {
                name: id.value.to_lowercase(),
                value: None,
            }
        }
        E::Identifier(id) => Expr::Column(None, ident_name(id)),
        E::CompoundIdentifier(ids) => match ids.as_slice() {
            [t, c] => Expr::Column(Some(ident_name(t)), ident_name(c)),
            _ => return unsupported(format!("the name {e}")),
        },
        E::Nested(inner) => convert_expr(inner)?,
        E::UnaryOp { op, expr } => {
            let op = match op {
                sp::UnaryOperator::Not => UnaryOp::Not,
                sp::UnaryOperator::Minus => UnaryOp::Neg,
                sp::UnaryOperator::Plus => UnaryOp::Plus,
                other => return unsupported(format!("the operator {other}")),
            };
            // Fold a negative literal so that i64::MIN parses and -1 is a constant.
            if let (UnaryOp::Neg, E::Value(v)) = (op, expr.as_ref()) {
                if let sp::Value::Number(n, _) = &v.value {
                    let neg = format!("-{n}");
                    if let Ok(i) = neg.parse::<i64>() {
                        return Ok(Expr::Literal(Literal::Int(i)));
                    }
                }
            }
            Expr::Unary(op, b(expr)?)
        }
        E::BinaryOp { left, op, right } => {
            Expr::Binary(convert_binary_op(op)?, b(left)?, b(right)?)
        }
        E::IsNull(x) | E::IsUnknown(x) => Expr::IsNull {
            expr: b(x)?,
            negated: false,
        },
        E::IsNotUnknown(x) => Expr::IsNull {
            expr: b(x)?,
            negated: true,
        },
        E::IsTrue(x) => Expr::IsBool {
            expr: b(x)?,
            value: true,
            negated: false,
        },
        E::IsNotTrue(x) => Expr::IsBool {
            expr: b(x)?,
            value: true,
            negated: true,
        },
        E::IsFalse(x) => Expr::IsBool {
            expr: b(x)?,
            value: false,
            negated: false,
        },
        E::IsNotFalse(x) => Expr::IsBool {
            expr: b(x)?,
            value: false,
            negated: true,
        },
        E::IsNotNull(x) => Expr::IsNull {
            expr: b(x)?,
            negated: true,
        },
        E::In {
            expr,
            target: sp::InTarget::List(list),
            negated,
            global: false,
        } => Expr::InList {
            expr: b(expr)?,
            list: list.iter().map(convert_expr).collect::<Result<_>>()?,
            negated: *negated,
        },
        E::In { .. } => return unsupported("IN with a subquery"),
        E::Between {
            expr,
            negated,
            low,
            high,
        } => Expr::Between {
            expr: b(expr)?,
            low: b(low)?,
            high: b(high)?,
            negated: *negated,
        },
        E::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: None,
        } => Expr::Like {
            expr: b(expr)?,
            pattern: b(pattern)?,
            negated: *negated,
            case_insensitive: false,
        },
        E::ILike {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: None,
        } => Expr::Like {
            expr: b(expr)?,
            pattern: b(pattern)?,
            negated: *negated,
            case_insensitive: true,
        },
        E::Cast {
            kind: sp::CastKind::Cast | sp::CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } => Expr::Cast(b(expr)?, convert_type(data_type)?),
        E::TypedString(ts) => {
            let value = match &ts.value.value {
                sp::Value::SingleQuotedString(s) => s.clone(),
                other => return unsupported(format!("the literal {other}")),
            };
            Expr::Cast(
                Box::new(Expr::Literal(Literal::String(value))),
                convert_type(&ts.data_type)?,
            )
        }
        E::Function(f) => convert_function(f)?,
        other => return unsupported(format!("the expression {other}")),
    })
}

/// Converts a chain of one associative operator (`a AND b AND …`) into a balanced tree of its
/// terms in their order. sqlparser's left-deep chain is walked with a loop, and the levels of
/// the balanced tree are entered in [`nesting`] while its terms are converted.
fn convert_chain(e: &sp::Expr, op: &sp::BinaryOperator) -> Result<Expr> {
    let mut terms = Vec::new();
    let mut pending = vec![e];
    while let Some(e) = pending.pop() {
        match e {
            sp::Expr::BinaryOp { left, op: o, right } if o == op => {
                pending.push(right);
                pending.push(left);
            }
            term => terms.push(term),
        }
    }
    // The tree is ceil(log2(terms)) levels deep; the first is this call's own.
    let height = usize::BITS - terms.len().saturating_sub(1).leading_zeros();
    let _levels = (1..height)
        .map(|_| nesting::enter())
        .collect::<Result<Vec<_>>>()?;
    let terms = terms
        .into_iter()
        .map(convert_expr)
        .collect::<Result<Vec<_>>>()?;
    balanced(convert_binary_op(op)?, terms)
}

/// A balanced tree of `op` over `terms`, in their order.
fn balanced(op: BinaryOp, mut terms: Vec<Expr>) -> Result<Expr> {
    if terms.len() <= 1 {
        return terms
            .pop()
            .ok_or_else(|| Error::Internal("an operator chain without terms".into()));
    }
    let right = terms.split_off(terms.len() / 2);
    Ok(Expr::Binary(
        op,
        Box::new(balanced(op, terms)?),
        Box::new(balanced(op, right)?),
    ))
}

fn convert_function(f: &sp::Function) -> Result<Expr> {
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return unsupported(format!("{f}"));
    }
    // `pg_catalog.f()` names the built-in `f`, as in PostgreSQL.
    let name = match f.name.0.as_slice() {
        [schema, part] if part_ident(schema)? == "pg_catalog" => part_ident(part)?,
        _ => object_name(&f.name)?,
    };
    let no_args = match &f.args {
        sp::FunctionArguments::None => true,
        sp::FunctionArguments::List(list) => list.args.is_empty() && list.clauses.is_empty(),
        sp::FunctionArguments::Subquery(_) => false,
    };
    if no_args && SESSION_FUNCTIONS.contains(&name.as_str()) {
        return Ok(Expr::SessionValue { name, value: None });
    }
    let mut args = Vec::new();
    let mut star = false;
    let mut distinct = false;
    match &f.args {
        sp::FunctionArguments::None => {}
        sp::FunctionArguments::Subquery(_) => return unsupported("subqueries"),
        sp::FunctionArguments::List(list) => {
            if !list.clauses.is_empty() {
                return unsupported(format!("{f}"));
            }
            distinct = matches!(
                list.duplicate_treatment,
                Some(sp::DuplicateTreatment::Distinct)
            );
            for arg in &list.args {
                match arg {
                    sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Expr(e)) => {
                        args.push(convert_expr(e)?)
                    }
                    sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Wildcard) => star = true,
                    other => return unsupported(format!("the function argument {other}")),
                }
            }
        }
    }
    Ok(Expr::Function {
        name,
        args,
        star,
        distinct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_point_select() {
        let stmts = parse("SELECT abalance FROM bench WHERE aid = 7").unwrap();
        assert_eq!(stmts.len(), 1);
        let Statement::Select(s) = &stmts[0].0 else {
            panic!("not a select")
        };
        assert_eq!(s.from, Some(("bench".to_string(), None)));
    }

    #[test]
    fn refuses_joins_by_name() {
        let err = parse("SELECT * FROM a JOIN b ON a.x = b.x").unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::FEATURE_NOT_SUPPORTED);
        assert!(err.to_string().contains("JOIN"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_42601() {
        assert_eq!(
            parse("SELEC 1").unwrap_err().sqlstate(),
            sqlstate::SYNTAX_ERROR
        );
    }

    #[test]
    fn placeholders_become_zero_based_params() {
        let stmts = parse("UPDATE t SET a = $2 WHERE id = $1").unwrap();
        let Statement::Update { sets, .. } = &stmts[0].0 else {
            panic!("not an update")
        };
        assert_eq!(sets[0].1, Expr::Param(1));
    }

    fn session(sql: &str) -> SessionStatement {
        match parse(sql).unwrap().remove(0).0 {
            Statement::Session(s) => s,
            other => panic!("{sql}: not a session statement: {other:?}"),
        }
    }

    #[test]
    fn set_forms_become_one_statement() {
        let word = |t: &str| SetValue::Word {
            text: t.into(),
            quoted: false,
        };
        assert_eq!(
            session("SET extra_float_digits = 3"),
            SessionStatement::Set {
                name: "extra_float_digits".into(),
                value: Some(vec![SetValue::Number("3".into())]),
                local: false,
            }
        );
        assert_eq!(
            session("SET LOCAL search_path TO \"$user\", public"),
            SessionStatement::Set {
                name: "search_path".into(),
                value: Some(vec![
                    SetValue::Word {
                        text: "$user".into(),
                        quoted: true
                    },
                    word("public")
                ]),
                local: true,
            }
        );
        assert_eq!(
            session("SET SESSION statement_timeout TO DEFAULT"),
            SessionStatement::Set {
                name: "statement_timeout".into(),
                value: None,
                local: false,
            }
        );
        let SessionStatement::Set { name, .. } = session("SET TIME ZONE 'UTC'") else {
            panic!("SET TIME ZONE")
        };
        assert_eq!(name, "timezone");
        let SessionStatement::Set { name, .. } = session("SET myapp.tenant = 'x'") else {
            panic!("a custom parameter")
        };
        assert_eq!(name, "myapp.tenant");
    }

    #[test]
    fn show_reset_and_the_pool_statements_parse() {
        assert_eq!(
            session("SHOW TRANSACTION ISOLATION LEVEL"),
            SessionStatement::Show(Some("transaction_isolation".into()))
        );
        assert_eq!(session("SHOW ALL"), SessionStatement::Show(None));
        assert_eq!(session("RESET ALL"), SessionStatement::Reset(None));
        assert_eq!(
            session("DEALLOCATE ALL"),
            SessionStatement::Deallocate(None)
        );
        assert_eq!(
            session("DEALLOCATE PREPARE s1"),
            SessionStatement::Deallocate(Some("s1".into()))
        );
        assert_eq!(session("CLOSE ALL"), SessionStatement::Close(None));
        assert_eq!(session("UNLISTEN *"), SessionStatement::Unlisten(None));
        assert_eq!(
            session("DISCARD ALL"),
            SessionStatement::Discard("ALL".into())
        );
    }

    #[test]
    fn transaction_modes_are_kept() {
        let Statement::Begin(modes) =
            &parse("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY").unwrap()[0].0
        else {
            panic!("not a BEGIN")
        };
        assert_eq!(modes.read_only, Some(true));
        assert_eq!(modes.isolation.as_deref(), Some("read committed"));
        assert_eq!(
            session("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
            SessionStatement::SetTransaction {
                modes: TransactionModes {
                    read_only: Some(false),
                    isolation: None
                },
                session: true,
            }
        );
    }

    #[test]
    fn session_functions_are_session_values() {
        let stmts =
            parse("SELECT current_user, current_schema, current_schema(), pg_catalog.version()")
                .unwrap();
        let Statement::Select(s) = &stmts[0].0 else {
            panic!("not a select")
        };
        let exprs: Vec<&Expr> = s
            .projection
            .iter()
            .map(|i| match i {
                SelectItem::Expr { expr, .. } => expr,
                SelectItem::Wildcard => panic!("wildcard"),
            })
            .collect();
        for (e, name) in exprs
            .iter()
            .zip(["current_user", "current_schema", "current_schema"])
        {
            assert_eq!(
                **e,
                Expr::SessionValue {
                    name: name.into(),
                    value: None
                }
            );
        }
        assert!(matches!(exprs[3], Expr::Function { name, .. } if name == "version"));
    }
}
