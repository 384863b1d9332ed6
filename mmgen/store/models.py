"""ORM models of the SQL store; the schema itself is owned by Alembic (`migrations/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so migrations can address them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an `INTEGER PRIMARY KEY`; everywhere else ids are 64-bit.
BigId = BigInteger().with_variant(Integer, "sqlite")

ITEM_MODALITIES = ("image", "text", "image+text")
ROW_MODALITIES = ("image", "text")
MODEL_KINDS = ("encoder", "hasher", "captioner", "generator")
PROMPT_KINDS = ("search", "caption", "generate", "eval")
FEEDBACK_SCORES = (1, 5)  # the lowest and highest score a user can give an output


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _json_object() -> Mapped[dict[str, Any]]:
    return mapped_column(JSON, default=dict, server_default=text("'{}'"), nullable=False)


class Base(DeclarativeBase):
    """Declarative base holding the store's metadata (imported by `migrations/env.py`)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Corpus(Base):
    """A named collection of items, imported from one source spec."""

    __tablename__ = "corpora"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    source: Mapped[str] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()

    items: Mapped[list[Item]] = relationship(back_populates="corpus", passive_deletes=True)

    def __repr__(self) -> str:
        return f"Corpus(id={self.id!r}, name={self.name!r})"


class Item(Base):
    """One record of a corpus: an image, a text, or both."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("corpus_id", "key"),
        CheckConstraint(_one_of("modality", ITEM_MODALITIES), name="modality"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1024))
    modality: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    group_key: Mapped[str | None] = mapped_column(String(512), index=True)
    meta: Mapped[dict[str, Any]] = _json_object()
    synthetic: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )

    corpus: Mapped[Corpus] = relationship(back_populates="items")

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, key={self.key!r}, modality={self.modality!r})"


class ModelRecord(Base):
    """A model artifact (encoder, hasher, captioner, generator) that produced vectors or outputs."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("kind", "name", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64), default="1", server_default="1")
    path: Mapped[str | None] = mapped_column(Text)
    checksum: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = _json_object()
    created_at: Mapped[datetime] = _created()

    def __repr__(self) -> str:
        return f"ModelRecord(id={self.id!r}, kind={self.kind!r}, name={self.name!r}, version={self.version!r})"


class IndexRecord(Base):
    """A named FAISS index: which encoder filled it, its dimension and factory string."""

    __tablename__ = "indexes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    encoder: Mapped[str] = mapped_column(String(1024))
    encoder_checksum: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    factory: Mapped[str] = mapped_column(String(256))
    params: Mapped[dict[str, Any]] = _json_object()
    created_at: Mapped[datetime] = _created()

    rows: Mapped[list[IndexRow]] = relationship(back_populates="index", passive_deletes=True)

    def __repr__(self) -> str:
        return f"IndexRecord(id={self.id!r}, name={self.name!r}, encoder={self.encoder!r}, dim={self.dim!r})"


class IndexRow(Base):
    """Maps one FAISS row id of an index (per modality) to the item it embeds."""

    __tablename__ = "index_rows"
    __table_args__ = (
        UniqueConstraint("index_id", "modality", "row_id"),
        UniqueConstraint("index_id", "modality", "item_id"),
        CheckConstraint(_one_of("modality", ROW_MODALITIES), name="modality"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    modality: Mapped[str] = mapped_column(String(8))
    row_id: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()

    index: Mapped[IndexRecord] = relationship(back_populates="rows")
    item: Mapped[Item] = relationship()

    def __repr__(self) -> str:
        return f"IndexRow(index_id={self.index_id!r}, modality={self.modality!r}, row_id={self.row_id!r}, item_id={self.item_id!r})"


class Prompt(Base):
    """One request (search, caption, generate, eval): its text or image and parameters."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    image_uri: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = _json_object()
    user: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created()
    # The prompt this one was refined from (`mmgen link`); kept when the parent is deleted, as NULL.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id", ondelete="SET NULL"), index=True)

    retrievals: Mapped[list[Retrieval]] = relationship(
        back_populates="prompt",
        order_by="Retrieval.rank",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    outputs: Mapped[list[Output]] = relationship(
        back_populates="prompt",
        order_by="Output.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"Prompt(id={self.id!r}, kind={self.kind!r})"


class Output(Base):
    """What a prompt produced: a text or a file, the model that made it, scores and latency."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str | None] = mapped_column(Text)
    file_uri: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    scores: Mapped[dict[str, Any]] = _json_object()
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()

    prompt: Mapped[Prompt] = relationship(back_populates="outputs")
    model: Mapped[ModelRecord | None] = relationship()
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="output",
        order_by="Feedback.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"Output(id={self.id!r}, prompt_id={self.prompt_id!r})"


class Retrieval(Base):
    """One neighbour a prompt was grounded on: its rank, item and score."""

    __tablename__ = "retrievals"
    __table_args__ = (
        UniqueConstraint("prompt_id", "rank"),
        CheckConstraint(_one_of("modality", ROW_MODALITIES), name="modality"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    score: Mapped[float] = mapped_column(Float)
    modality: Mapped[str] = mapped_column(String(8))

    prompt: Mapped[Prompt] = relationship(back_populates="retrievals")
    item: Mapped[Item | None] = relationship()

    def __repr__(self) -> str:
        return f"Retrieval(prompt_id={self.prompt_id!r}, rank={self.rank!r}, item_id={self.item_id!r}, score={self.score!r})"


class Feedback(Base):
    """A user's score (1..5) and note on one output; one row per user per output, updated in place."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("output_id", "user"),
        CheckConstraint(f"score BETWEEN {FEEDBACK_SCORES[0]} AND {FEEDBACK_SCORES[1]}", name="score"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"))
    user: Mapped[str] = mapped_column(String(128))
    score: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )

    output: Mapped[Output] = relationship(back_populates="feedback")

    def __repr__(self) -> str:
        return f"Feedback(output_id={self.output_id!r}, user={self.user!r}, score={self.score!r})"
