"""Training REALM: salient-span masking, the data collators, the ICT warm start of the retriever, REALM pre-training
(`train_realm`) and open-QA fine-tuning (`RealmTrainer`), with their optimizer parameter groups.

The public names are exported from `realm_hf`; the modules here are their homes.
"""
