"""Full text search over a user's chunks, in web-search syntax on both databases.

The query language is PostgreSQL's `websearch_to_tsquery`: words are AND-ed, "quoted
text" is a phrase, `-word` (or `-"a phrase"`) excludes, `or` between terms means either.
PostgreSQL parses the query itself; on SQLite it is translated here into an FTS5 MATCH
expression in which every term is a quoted string, so no user text ever reaches FTS5's
own syntax (`NEAR(`, `*`, `AND`, column filters, ...).

A query with no term to look for (empty, only stopwords, only exclusions) finds nothing.
Scores are higher-is-better on both databases but are not comparable between them.
Snippets are HTML: the chunk's text, escaped, with matches between `<mark>` and `</mark>`.
The databases mark matches with two private-use characters, and only those become tags
once the text is escaped, so a document's own markup is never returned as markup. Those
two characters never occur in stored text: `extraction.chunk` replaces a document's own
with U+FFFD (and migration 0004 did so for the chunks stored before)."""

import html
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, column, func, literal_column, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause

from services.documents.extraction import MATCH_END, MATCH_START
from services.documents.models import READY, Chunk, Document
from shared.db import is_sqlite
from shared.stopwords import ENGLISH_STOPWORDS

# Longer queries are cut: nobody types more, and the cost grows with the terms.
MAX_QUERY_CHARS = 1000
MAX_TERMS = 32
MARK_START = "<mark>"
MARK_END = "</mark>"
# The databases put MATCH_START and MATCH_END (reserved, never in a chunk's text) around
# matches; `marked` turns them into MARK_START and MARK_END once the text is escaped.
SNIPPET_TOKENS = 16

STOPWORDS = ENGLISH_STOPWORDS

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A quoted phrase (closing quote optional at the end), or a run of non-space characters
# that holds no quote.
_TOKEN = re.compile(r'(-?)"([^"]*)(?:"|$)|(-?)([^\s"]+)')
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Hit:
    document_id: uuid.UUID
    title: str
    chunk_id: uuid.UUID
    page: int | None
    score: float
    snippet: str


async def _hits(session: AsyncSession, statement: Select[Any]) -> list[Hit]:
    """The hits of a search statement whose columns are named as `Hit`'s fields."""
    rows = (await session.execute(statement)).all()
    return [
        Hit(
            document_id=row.document_id,
            title=row.title,
            chunk_id=row.chunk_id,
            page=row.page,
            score=float(row.score),
            snippet=marked(row.snippet),
        )
        for row in rows
    ]


def marked(snippet: str) -> str:
    """A database's snippet as HTML: escaped, with its matches in `<mark>`."""
    escaped = html.escape(snippet, quote=False)
    return escaped.replace(MATCH_START, MARK_START).replace(MATCH_END, MARK_END)


@dataclass
class _Group:
    """Terms AND-ed together; each term is a tuple of words (a phrase when longer than one)."""

    include: list[tuple[str, ...]] = field(default_factory=list)
    exclude: list[tuple[str, ...]] = field(default_factory=list)


def clean_query(query: str) -> str:
    """What is searched for: without control characters (PostgreSQL refuses NUL) and cut
    to `MAX_QUERY_CHARS`."""
    return _CONTROL.sub(" ", query)[:MAX_QUERY_CHARS].strip()


def parse_query(query: str) -> list[_Group]:
    """The query's OR-ed groups, keeping only groups that have something to look for."""
    groups = [_Group()]
    terms = 0
    for match in _TOKEN.finditer(clean_query(query)):
        if terms >= MAX_TERMS:
            break
        if match.group(2) is not None:
            negated, text, quoted = match.group(1) == "-", match.group(2), True
        else:
            negated, text, quoted = match.group(3) == "-", match.group(4), False
        if not quoted and text.lower() == "or":
            if groups[-1].include or groups[-1].exclude:
                groups.append(_Group())
            continue
        # `e-mail` or `o'clock` unquoted: its parts in order, as PostgreSQL reads them.
        words = tuple(word.lower() for word in _WORD.findall(text))
        if all(word in STOPWORDS for word in words):
            continue  # also when there is no word at all
        terms += 1
        (groups[-1].exclude if negated else groups[-1].include).append(words)
    return [group for group in groups if group.include]


def _fts5_term(words: tuple[str, ...]) -> str:
    # \w+ never holds a double quote, but escape anyway: this is the only thing between
    # user input and FTS5's syntax.
    return '"' + " ".join(words).replace('"', '""') + '"'


def fts5_match(query: str) -> str | None:
    """The FTS5 MATCH expression for a web-search query, or None when it looks for nothing."""
    groups = parse_query(query)
    if not groups:
        return None
    parts = []
    for group in groups:
        expression = "(" + " AND ".join(_fts5_term(t) for t in group.include) + ")"
        if group.exclude:
            excluded = " OR ".join(_fts5_term(t) for t in group.exclude)
            expression = f"({expression} NOT ({excluded}))"
        parts.append(expression)
    return " OR ".join(parts)


async def search(
    session: AsyncSession,
    user_id: uuid.UUID,
    query: str,
    *,
    limit: int,
    document_ids: list[uuid.UUID] | None,
) -> list[Hit]:
    """The user's best matching chunks among their `ready` documents, best first.

    `document_ids`, when given, restricts the search to those documents (an empty list
    finds nothing)."""
    if limit <= 0 or (document_ids is not None and not document_ids):
        return []
    if not parse_query(query):
        return []
    if is_sqlite(session):
        return await _search_sqlite(session, user_id, query, limit, document_ids)
    return await _search_postgresql(session, user_id, clean_query(query), limit, document_ids)


def _scope(
    statement: Select[tuple[object, ...]],
    user_id: uuid.UUID,
    document_ids: list[uuid.UUID] | None,
) -> Select[tuple[object, ...]]:
    statement = statement.where(
        Chunk.user_id == user_id, Document.user_id == user_id, Document.status == READY
    )
    if document_ids is not None:
        statement = statement.where(Chunk.document_id.in_(document_ids))
    return statement


async def _search_postgresql(
    session: AsyncSession,
    user_id: uuid.UUID,
    query: str,
    limit: int,
    document_ids: list[uuid.UUID] | None,
) -> list[Hit]:
    tsquery = func.websearch_to_tsquery(literal_column("'english'::regconfig"), query)
    search_vector: ColumnClause[Any] = literal_column("chunks.search_vector")
    rank = func.ts_rank(search_vector, tsquery).label("score")
    best = (
        _scope(
            select(
                Chunk.id.label("chunk_id"),
                Chunk.document_id,
                Chunk.page,
                Chunk.position,
                Chunk.text,
                func.coalesce(func.nullif(Document.title, ""), Document.filename).label("title"),
                rank,
            )
            .join(Document, Document.id == Chunk.document_id)
            .where(search_vector.op("@@")(tsquery)),
            user_id,
            document_ids,
        )
        .order_by(rank.desc(), Chunk.document_id, Chunk.position)
        .limit(limit)
        .subquery("best")
    )
    # The headline is the costly part: only for the rows kept.
    headline = func.ts_headline(
        literal_column("'english'::regconfig"),
        best.c.text,
        tsquery,
        f'StartSel="{MATCH_START}", StopSel="{MATCH_END}", MaxWords=35, MinWords=15',
    )
    statement = select(
        best.c.document_id,
        best.c.title,
        best.c.chunk_id,
        best.c.page,
        best.c.score,
        headline.label("snippet"),
    ).order_by(best.c.score.desc(), best.c.document_id, best.c.position)
    return await _hits(session, statement)


async def _search_sqlite(
    session: AsyncSession,
    user_id: uuid.UUID,
    query: str,
    limit: int,
    document_ids: list[uuid.UUID] | None,
) -> list[Hit]:
    expression = fts5_match(query)
    if expression is None:
        return []
    fts_table = table("chunks_fts", column("rowid"))
    fts: ColumnClause[Any] = literal_column(
        "chunks_fts"
    )  # the table as the argument of MATCH and its functions
    bm25 = func.bm25(fts)  # lower is better
    statement = (
        _scope(
            select(
                Chunk.document_id,
                func.coalesce(func.nullif(Document.title, ""), Document.filename).label("title"),
                Chunk.id.label("chunk_id"),
                Chunk.page,
                (-bm25).label("score"),
                func.snippet(fts, 0, MATCH_START, MATCH_END, "…", SNIPPET_TOKENS).label("snippet"),
            )
            .select_from(fts_table)
            .join(Chunk, literal_column("chunks.rowid") == fts_table.c.rowid)
            .join(Document, Document.id == Chunk.document_id)
            .where(fts.op("MATCH")(expression)),
            user_id,
            document_ids,
        )
        .order_by(bm25, Chunk.document_id, Chunk.position)
        .limit(limit)
    )
    return await _hits(session, statement)
