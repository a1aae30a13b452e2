"""The egress configuration most tests share: one caller, one provider, one rule."""

from __future__ import annotations

__all__ = ["LLM_CONFIG"]

#: ``llm/summarizer`` (service account ``summarizer-sa``) may POST chat calls with gpt-4o-mini to
#: ``api.llm.example``, an OpenAI-compatible provider whose key is the secret ``llm-key``.
LLM_CONFIG = """\
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {name: summarizer, namespace: llm, labels: {app: summarizer}}
spec: {serviceAccount: summarizer-sa}
---
apiVersion: meshward.dev/v1alpha1
kind: ExternalService
metadata: {name: llm-provider, namespace: llm}
spec: {hosts: [api.llm.example], protocol: openai, credential: {secret: llm-key}}
---
apiVersion: meshward.dev/v1alpha1
kind: EgressPolicy
metadata: {name: summarizer-may-chat, namespace: llm}
spec:
  selector: {matchLabels: {app: summarizer}}
  rules:
  - to: [{hosts: [api.llm.example], methods: [POST], paths: ["/v1/chat/*"], models: ["gpt-4o-mini"]}]
"""
