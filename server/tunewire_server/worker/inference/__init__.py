"""worker/inference"""
