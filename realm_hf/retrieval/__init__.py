"""Retrieval for REALM: the knowledge corpus as data, its index, and the retriever the models call.

How a question flows:

    question -> RealmEmbedder (query tower, `modeling_realm`)
             -> RealmIndex.search (`index`: exact inner product, or FAISS; the corpus is a `datasets` Dataset)
             -> RealmRetriever (`retriever`: top-k block ids -> block token ids, answer spans)
             -> RealmReader / RealmKnowledgeAugEncoder (`modeling_realm`)

How a refresh flows during training:

    train_realm / IndexRefreshCallback (`realm_hf.training`)
             -> refresh (`refresh`: schedule, synchronous, asynchronous or external re-embedding, the one swap and
                save policy)
             -> index.refresh_from (the `RefreshableIndex` lifecycle: a plain index embeds with `embedding` split
                over the processes, a sharded one shard by shard)
             -> a new index, swapped into the retriever the model holds

The modules: `protocols` (the `Index` and `Retriever` interfaces the model is typed with, and `RefreshableIndex`,
the lifecycle training uses), `corpus` (documents into
evidence blocks), `formats` (the one builder of document-tower, encoder and reader inputs), `index` (the index),
`index_format` (its files on disk), `search` (exact and FAISS search), `fingerprint` (which embedder built an index),
`embedding`, `refresh`, `retriever`, `sharded` (the index split over the processes of torch.distributed), `storage`
(local directory or Hub id) and `legacy` (the original checkpoints' `block_emb` and pickled block records).
"""
