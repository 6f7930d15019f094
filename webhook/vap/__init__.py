"""Compile Karta definitions and the policy rules to ValidatingAdmissionPolicies (docs/vap.md).

Pure: definitions and policy settings in, Kubernetes manifests out. jq.py translates definition paths
(parsed by webhook.karta.jqparse), views.py builds the resolved view as policy variables, rules.py holds
one function per rule, policy.py assembles policies and bindings, chart.py the copy the Helm chart ships.
"""
