"""The job spec: a YAML file validated into typed models before any call is made.
May import foldem.core and validators (to check that named validators exist).
"""
