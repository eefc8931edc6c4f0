"""VoiceGateway Kubernetes operator: one custom resource becomes the whole voice stack."""

GROUP = "voice.aetherpro.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VoiceGateway"
PLURAL = "voicegateways"
SINGULAR = "voicegateway"
SHORT_NAMES = ["vgw"]
FIELD_MANAGER = "voice-gateway-operator"
__version__ = "0.1.0"
