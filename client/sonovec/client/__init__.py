"""Python client for sonovec, over REST or gRPC (chosen by the URL scheme).

from sonovec.client import Client

with Client("grpc://localhost:50051") as client:      # or "http://localhost:8000"
    embedding = client.embed("clip.wav")
    print(embedding.vector.shape, embedding.model.weights_fingerprint)
"""

from sonovec.client._audio import AudioData, AudioLike, read_wav
from sonovec.client._client import AsyncClient, AsyncCollections, Client, Collections
from sonovec.client._errors import SonovecClientError
from sonovec.client._lab import LabAnalysis, LabAudio, Latents
from sonovec.client._types import (
    AddResult,
    Classification,
    Codes,
    Collection,
    DecodedAudio,
    Embedding,
    Hit,
    IndexSpec,
    Item,
    LabelScore,
    Limits,
    ModelInfo,
    ModelsInfo,
    NewItem,
    ProbeInfo,
    SearchResult,
    SelfSimilarity,
    ServerInfo,
    Similarity,
    Space,
    SpaceClaim,
)

__all__ = [
    "LabAnalysis",
    "LabAudio",
    "Latents",
    "AddResult",
    "AsyncClient",
    "AsyncCollections",
    "AudioData",
    "AudioLike",
    "Classification",
    "Client",
    "Codes",
    "Collection",
    "Collections",
    "DecodedAudio",
    "Embedding",
    "Hit",
    "IndexSpec",
    "Item",
    "LabelScore",
    "Limits",
    "ModelInfo",
    "ModelsInfo",
    "NewItem",
    "ProbeInfo",
    "SearchResult",
    "SelfSimilarity",
    "ServerInfo",
    "Similarity",
    "Space",
    "SpaceClaim",
    "SonovecClientError",
    "read_wav",
]
__version__ = "0.1.0"
